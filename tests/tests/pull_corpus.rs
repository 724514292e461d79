//! Acceptance 1 of the client issue on the real corpus: corpus v1 committed
//! into an archive repository and published signed; pulled from
//! `treectl serve` (batched fetch) and from nginx serving the same
//! directory (plain GETs) into fresh bare-user repositories. Each checkout
//! equals corpus v1 and fsck is clean. Skips, saying why, without the
//! corpus or nginx.

use std::ffi::OsStr;
use std::path::Path;

use treectl_e2e::nginx::Nginx;
use treectl_e2e::server::{treectl, Server};
use treectl_e2e::{compare_trees, corpus_dir, is_root, Scratch};

fn run(args: &[&OsStr]) -> String {
    let (ok, out, err) = treectl(args, &[]);
    assert!(ok, "treectl {args:?} failed: {err}");
    out
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn pull_and_check(work: &Path, name: &str, url: &str, key_pub: &Path, corpus_v1: &Path) {
    let client = work.join(format!("client-{name}"));
    run(&[
        os("--repo"),
        client.as_os_str(),
        os("init"),
        os("--mode"),
        os("bare-user"),
    ]);
    run(&[
        os("--repo"),
        client.as_os_str(),
        os("remote"),
        os("add"),
        os("origin"),
        os(url),
        os("--trusted-key"),
        key_pub.as_os_str(),
    ]);
    let out = run(&[
        os("--repo"),
        client.as_os_str(),
        os("pull"),
        os("origin:os/stable"),
    ]);
    eprintln!("{name}: {out}");
    let co = work.join(format!("co-{name}"));
    run(&[
        os("--repo"),
        client.as_os_str(),
        os("checkout"),
        os("origin:os/stable"),
        co.as_os_str(),
    ]);
    let diffs = compare_trees(corpus_v1, &co, is_root());
    assert!(
        diffs.is_empty(),
        "{name}: checkout differs from corpus v1: {:?}",
        &diffs[..diffs.len().min(10)]
    );
    let fsck = run(&[os("--repo"), client.as_os_str(), os("fsck")]);
    assert!(fsck.contains("no problems"), "{name}: {fsck}");
}

#[test]
fn corpus_v1_pulled_from_treectl_serve_and_nginx() {
    let Some(corpus) = corpus_dir() else {
        eprintln!("SKIP: the corpus is not built (../shared/corpus/build.sh)");
        return;
    };
    let scratch = Scratch::new("6G");
    let work = scratch.path();
    let v1 = corpus.join("corpus-v1");
    let srv = work.join("srv");
    let key = work.join("signing.key");
    run(&[
        os("--repo"),
        srv.as_os_str(),
        os("init"),
        os("--mode"),
        os("archive"),
    ]);
    run(&[os("keygen"), os("--out"), key.as_os_str()]);
    let id = run(&[
        os("--repo"),
        srv.as_os_str(),
        os("commit"),
        os("--ref"),
        os("os/stable"),
        os("--tree"),
        v1.as_os_str(),
        os("--metadata"),
        os("version=1"),
    ]);
    run(&[
        os("publish"),
        srv.as_os_str(),
        os("os/stable"),
        os(id.trim()),
        os("--sign-key"),
        key.as_os_str(),
    ]);
    let key_pub = work.join("signing.key.pub");
    {
        let server = Server::start(&srv, &[], &[]);
        pull_and_check(work, "serve", &server.url(), &key_pub, &v1);
    }
    match Nginx::start(&work.join("nginx"), &srv) {
        Some(nginx) => pull_and_check(work, "nginx", &nginx.url(), &key_pub, &v1),
        None => eprintln!("SKIP (nginx part): nginx is not installed"),
    }
}
