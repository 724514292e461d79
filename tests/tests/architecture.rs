//! The dependency rules of ARCHITECTURE.md ("Architecture invariant"
//! lines), checked against the crate graph `cargo metadata` reports. Only
//! normal and build dependencies count: tests may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Workspace crates and, for each, its direct dependencies (by crate name)
/// and its whole dependency closure.
struct Graph {
    direct: BTreeMap<String, BTreeSet<String>>,
    closure: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The graph for the platform being built: what this machine compiles
    // is what the rules are about (and its crates are all downloaded).
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Every package's non-dev dependencies, by package id.
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let id = node["id"].as_str().unwrap();
        let normal = node["deps"].as_array().unwrap().iter().filter(|d| {
            d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"))
        });
        deps.insert(id, normal.map(|d| d["pkg"].as_str().unwrap()).collect());
    }
    let mut g = Graph {
        direct: BTreeMap::new(),
        closure: BTreeMap::new(),
    };
    for member in meta["workspace_members"].as_array().unwrap() {
        let id = member.as_str().unwrap();
        let name = name_of[id].to_owned();
        let direct = deps[id].iter().map(|d| name_of[d].to_owned()).collect();
        let mut seen = BTreeSet::new();
        let mut stack = deps[id].clone();
        while let Some(d) = stack.pop() {
            if seen.insert(name_of[d].to_owned()) {
                stack.extend(deps[d].iter().copied());
            }
        }
        g.direct.insert(name.clone(), direct);
        g.closure.insert(name, seen);
    }
    g
}

/// The workspace crates whose direct dependencies include `dep`.
fn direct_users(g: &Graph, dep: &str) -> BTreeSet<String> {
    g.direct
        .iter()
        .filter(|(_, d)| d.contains(dep))
        .map(|(n, _)| n.clone())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_crate_graph_keeps_its_rules() {
    let g = graph();
    assert!(
        g.direct.len() >= 12,
        "workspace crates: {:?}",
        g.direct.keys()
    );

    assert_eq!(
        direct_users(&g, "axum"),
        set(&["treectl-server"]),
        "only the server knows axum"
    );
    assert_eq!(
        direct_users(&g, "reqwest"),
        set(&["treectl-lockfiles", "treectl-transport"]),
        "only transport and lockfiles speak HTTP"
    );
    assert_eq!(
        direct_users(&g, "clap"),
        set(&["treectl", "treectl-server"]),
        "only the two binaries parse command lines"
    );
    for heavy in ["tokio", "axum", "reqwest", "clap", "gix"] {
        for lib in ["treectl-id", "treectl-store", "treectl-wire"] {
            assert!(
                !g.closure[lib].contains(heavy),
                "{lib} must not depend on {heavy}, even indirectly"
            );
        }
    }
    assert!(
        !g.closure["treectl-sysroot"].contains("treectl-lockfiles"),
        "the sysroot does not depend on lockfiles"
    );
    assert!(
        !g.closure["treectl"].contains("treectl-server"),
        "the client never links the server"
    );
    for (name, closure) in &g.closure {
        if name != "treectl-server" {
            assert!(!closure.contains("axum"), "{name} links axum");
        }
    }
    let workspace: BTreeSet<String> = g.direct.keys().cloned().collect();
    let wire_uses: BTreeSet<String> = g.direct["treectl-wire"]
        .intersection(&workspace)
        .cloned()
        .collect();
    assert_eq!(
        wire_uses,
        set(&["treectl-id"]),
        "the wire types depend on nothing but ids and kinds"
    );
    let store_uses: BTreeSet<String> = g.direct["treectl-store"]
        .intersection(&workspace)
        .cloned()
        .collect();
    assert_eq!(store_uses, set(&["treectl-id"]), "the store is the bottom");
}
