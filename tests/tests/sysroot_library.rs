//! The sysroot library upgrades a machine by itself: install from
//! `treectl serve`, stage an upgrade, finalize it, roll back, and refuse to
//! re-apply the release rolled back from, all through `treectl_sysroot`
//! calls (the binary only prepares and serves the releases). Reads on the
//! server need a token, so the pull options the library takes are used.

use std::fs;
use std::path::Path;

use treectl_e2e::server::{synthetic_tree, write_tokens, Server, READ_TOKEN};
use treectl_e2e::treectl;
use treectl_release::sign::PublicKey;
use treectl_sysroot::finalize::{finalize_staged, read_staged};
use treectl_sysroot::install::{install, InstallOptions, NewRemote};
use treectl_sysroot::rollback::rollback;
use treectl_sysroot::source::Source;
use treectl_sysroot::state::read_state;
use treectl_sysroot::upgrade::{upgrade, Decision, UpgradeMode, UpgradeOptions};
use treectl_sysroot::Sysroot;
use treectl_transport::progress::Silent;
use treectl_transport::pull::PullOptions;

fn run(args: &[&str]) -> String {
    treectl(args).ok().trim().to_owned()
}

/// Commits release `n` (an OS tree with /etc defaults) and publishes it.
fn release(dir: &Path, origin: &str, url: &str, n: u32) -> String {
    let tree = dir.join(format!("tree-{n}"));
    synthetic_tree(&tree, n);
    fs::write(tree.join("etc/motd"), format!("release {n}\n")).unwrap();
    let id = run(&[
        "--repo",
        origin,
        "commit",
        "--ref",
        "os/stable",
        "--tree",
        tree.to_str().unwrap(),
        "--metadata",
        &format!("version={n}"),
        "--timestamp",
        &format!("2024-01-0{n}T00:00:00Z"),
    ]);
    let token = dir.join("publish.token");
    run(&[
        "--repo",
        origin,
        "push",
        url,
        "os/stable",
        "--token-file",
        token.to_str().unwrap(),
    ]);
    id
}

fn default_commit(sr: &Sysroot) -> String {
    read_state(sr).unwrap().deployments[0].commit.clone()
}

#[test]
fn the_library_installs_upgrades_stages_finalizes_and_rolls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let served = dir.join("served");
    run(&[
        "--repo",
        served.to_str().unwrap(),
        "init",
        "--mode",
        "archive",
    ]);
    let key = dir.join("release.key");
    run(&["keygen", "--out", key.to_str().unwrap()]);
    let tokens = write_tokens(dir, "token");
    let server = Server::start(
        &served,
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--tokens",
            tokens.to_str().unwrap(),
        ],
        &[],
    );
    let url = server.url();
    let origin = dir.join("origin");
    let origin = origin.to_str().unwrap();
    run(&["--repo", origin, "init", "--mode", "bare-user"]);
    let v1 = release(dir, origin, &url, 1);

    // A directory on the build host: the host's reserve is not at stake.
    let sr = Sysroot::new(&dir.join("sysroot")).with_reserve(0);
    let source = Source::Remote {
        name: "origin".into(),
        refname: "os/stable".into(),
    };
    let pull = PullOptions {
        token: Some(READ_TOKEN.to_owned()),
        ..PullOptions::default()
    };
    // Without the read token the server refuses, and nothing is installed.
    let mut opts = InstallOptions {
        remote: Some(NewRemote {
            url: url.clone(),
            mirrors: vec![],
            trusted_keys: vec![PublicKey::load(&dir.join("release.key.pub")).unwrap()],
        }),
        ..InstallOptions::default()
    };
    let refused = install(&sr, &source, &opts, &Silent::default());
    assert!(refused.is_err(), "a pull without the read token must fail");
    assert!(read_state(&sr).is_err(), "nothing installed");
    opts.pull = pull.clone();
    let d1 = install(&sr, &source, &opts, &Silent::default()).unwrap();
    assert_eq!(d1.commit, v1);
    assert_eq!(
        d1.order.serial,
        Some(1),
        "the pull's serial orders releases"
    );

    // The admin's /etc change survives the staged upgrade.
    let etc = d1.path(&sr).join("etc");
    fs::write(etc.join("local.conf"), "mine\n").unwrap();
    let v2 = release(dir, origin, &url, 2);
    let staged = UpgradeOptions {
        mode: UpgradeMode::Stage,
        allow_downgrade: false,
        ignore_rollout: false,
        pull: pull.clone(),
    };
    let out = upgrade(&sr, &staged, &Silent::default()).unwrap();
    assert_eq!(out.decision, Decision::Update);
    assert_eq!(out.head.to_hex(), v2);
    assert_eq!(out.version.as_deref(), Some("2"));
    let pulled = out.pull.as_ref().expect("a remote origin is pulled");
    assert_eq!(
        pulled.commit.to_hex(),
        v2,
        "the decision used the pull's outcome"
    );
    assert_eq!(out.serial, Some(pulled.serial));
    assert!(pulled.objects_fetched > 0);
    assert_eq!(default_commit(&sr), v1, "staging does not switch");
    assert_eq!(read_staged(&sr).unwrap().unwrap().commit, v2);

    let d2 = finalize_staged(&sr).unwrap().expect("a staged deployment");
    assert_eq!(default_commit(&sr), v2);
    let etc2 = d2.path(&sr).join("etc");
    assert_eq!(
        fs::read_to_string(etc2.join("local.conf")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        fs::read_to_string(etc2.join("motd")).unwrap(),
        "release 2\n"
    );

    // Up to date: nothing to do.
    let now = UpgradeOptions {
        pull: pull.clone(),
        ..UpgradeOptions::default()
    };
    let out = upgrade(&sr, &now, &Silent::default()).unwrap();
    assert_eq!(out.decision, Decision::UpToDate);
    assert!(out.deployment.is_none());

    // Roll back; upgrade does not re-apply the release rolled back from.
    let st = rollback(&sr).unwrap();
    assert_eq!(st.deployments[0].commit, v1);
    assert_eq!(st.deployments[1].commit, v2);
    let out = upgrade(&sr, &now, &Silent::default()).unwrap();
    assert_eq!(out.decision, Decision::RolledBackFrom);
    assert!(out.deployment.is_none());
    assert_eq!(default_commit(&sr), v1);

    // A newer release is deployed again.
    let v3 = release(dir, origin, &url, 3);
    let out = upgrade(&sr, &now, &Silent::default()).unwrap();
    assert_eq!(out.decision, Decision::Update);
    assert_eq!(out.deployment.as_ref().unwrap().commit, v3);
    assert_eq!(default_commit(&sr), v3);
    drop(server);
}
