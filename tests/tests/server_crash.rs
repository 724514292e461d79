//! Acceptance 5 of the server issue: the server killed (SIGKILL, through
//! `TREECTL_FAILPOINT`) during a push or a publish leaves the index and the
//! history each either before or after the operation, and fsck clean. A
//! restarted server finishes or forgets the interrupted publish, so index,
//! history and ref then agree.

use std::path::Path;

use treectl_e2e::server::{Server, ServerFixture};
use treectl_e2e::treectl_in;
use treectl_release::publish::read_history;
use treectl_release::summary::read_index;
use treectl_store::refs::{try_read_ref, RefName};
use treectl_store::Repo;

struct State {
    index: Option<Vec<u8>>,
    history: Option<Vec<u8>>,
}

fn state(srv: &Path) -> State {
    State {
        index: std::fs::read(srv.join("summary.json")).ok(),
        history: std::fs::read(srv.join("state/history.jsonl")).ok(),
    }
}

fn fsck_clean(srv: &Path) {
    let out = treectl_in(srv, ["fsck"]).ok();
    assert!(out.contains("no problems"), "fsck: {out}");
}

/// Index, history and ref agree with each other.
fn consistent(srv: &Path) -> u64 {
    let repo = Repo::open(srv).expect("open");
    let index = read_index(&repo)
        .expect("read index")
        .map(|s| s.index_unverified().expect("parse"));
    let history = read_history(&repo).expect("history");
    match index {
        None => {
            assert!(history.is_empty(), "history without an index: {history:?}");
            0
        }
        Some(index) => {
            let last = history.last().expect("an index without history");
            assert_eq!(last.serial, index.serial, "index and history disagree");
            let entry = &index.refs[&last.ref_name];
            assert_eq!(entry.commit, last.commit);
            let name = RefName::new(&last.ref_name).expect("valid");
            assert_eq!(try_read_ref(&repo, &name).expect("ref"), Some(entry.commit));
            index.serial
        }
    }
}

/// A server of `f.srv`, dying at `failpoint` if there is one.
fn start_server(f: &ServerFixture, failpoint: Option<&str>) -> Server {
    let env: Vec<(&str, &str)> = failpoint
        .map(|f| ("TREECTL_FAILPOINT", f))
        .into_iter()
        .collect();
    f.serve(&[], &env)
}

/// Pushes `os/stable`; returns (success, stderr).
fn push(f: &ServerFixture, server: &Server) -> (bool, String) {
    let out = f.push(server).run();
    (out.status.success(), out.stderr)
}

#[test]
fn killed_during_push_or_publish_leaves_before_or_after() {
    let points = [
        "stage-object:3",
        "stage-object:7",
        "store-object:1",
        "store-object:7",
        "before-refs:1",
        "publish-before-index:1",
        "publish-after-index:1",
        "publish-after-history:1",
    ];
    for point in points {
        let f = ServerFixture::new("anonymous");
        // v1 published normally: the "before" state.
        f.commit(1);
        {
            let server = start_server(&f, None);
            let (ok, err) = push(&f, &server);
            assert!(ok, "{err}");
        }
        let before = state(&f.srv);
        assert_eq!(consistent(&f.srv), 1);
        // v2 pushed to a server that dies at the failpoint.
        f.commit(2);
        let mut server = start_server(&f, Some(point));
        let (ok, err) = push(&f, &server);
        let status = server.wait_exit(30);
        assert!(
            status.is_some(),
            "{point}: the server did not die (push ok={ok}: {err})"
        );
        assert!(
            !ok,
            "{point}: the push cannot succeed when the server died: {err}"
        );
        drop(server);
        let mid = state(&f.srv);
        fsck_clean(&f.srv);
        // Each of index and history is the old one or a new one.
        let index_moved = mid.index != before.index;
        let history_moved = mid.history != before.history;
        if point.starts_with("publish-after-index") {
            assert!(index_moved && !history_moved, "{point}");
        } else if point.starts_with("publish-after-history") {
            assert!(index_moved && history_moved, "{point}");
        } else {
            assert!(
                !index_moved && !history_moved,
                "{point}: nothing should be published yet"
            );
        }
        // A restarted server recovers: index, history and ref agree, and
        // the serial is the before or the after one.
        let server = start_server(&f, None);
        let serial = consistent(&f.srv);
        let expected = if index_moved { 2 } else { 1 };
        assert_eq!(serial, expected, "{point}: after recovery");
        fsck_clean(&f.srv);
        // And the push can be repeated to completion.
        let (ok, err) = push(&f, &server);
        assert!(ok, "{point}: retry: {err}");
        assert_eq!(consistent(&f.srv), expected + 1, "{point}: after the retry");
        fsck_clean(&f.srv);
    }
}
