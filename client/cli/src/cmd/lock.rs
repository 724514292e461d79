//! `treectl lock ...` and `treectl compose`, and the `--components` views
//! of `show` and `diff`: thin layers over `treectl-lockfiles`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use treectl_compose::components::{self, Change};
use treectl_lockfiles::fetch::Fetcher;
use treectl_lockfiles::lockfile::{AptSource, Lockfile, Source};
use treectl_lockfiles::ops::{self, AddRequest};
use treectl_store::object::Commit;
use treectl_store::refs::{rev_parse, RefName};
use treectl_store::{ObjectId, Repo};
use treectl_sysroot::upgrade::{commit_components as commit_versions, component_changes};

/// Exit status of `lock verify` when it found problems.
pub const EXIT_PROBLEMS: u8 = 3;
/// Exit status of `lock update` when nothing changed (as rpm-ostree's
/// `--unchanged-exit-77`).
pub const EXIT_UNCHANGED: u8 = 77;

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Add components to a lockfile (created if missing), importing them
    Add(Box<AddArgs>),
    /// Bump components to the newest versions their sources offer; exit 77 when nothing changed
    Update {
        #[arg(long, value_name = "FILE")]
        lockfile: PathBuf,
        /// Only these components (default: all)
        #[arg(value_name = "NAME")]
        names: Vec<String>,
        /// Print the changes as JSON
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print the changes as a Markdown pull request body
        #[arg(long)]
        markdown: bool,
        /// Commit the new lockfile in the enclosing git repository
        #[arg(long)]
        git_commit: bool,
    },
    /// Check every component is in the repository with the pinned digests
    /// and every package dependency is satisfied; exit 3 on problems
    Verify {
        #[arg(long, value_name = "FILE")]
        lockfile: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the components that differ between two lockfiles
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["deb", "apt", "tar", "git", "dir"])))]
pub struct AddArgs {
    #[arg(long, value_name = "FILE")]
    pub lockfile: PathBuf,
    /// Local .deb files
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub deb: Vec<PathBuf>,
    /// An apt source: the name of one in the lockfile, or "URL SUITE [COMPONENT...]"
    /// (a suite ending in "/" is a flat repository); then the PACKAGEs
    #[arg(long, value_name = "SOURCE", requires = "packages")]
    pub apt: Option<String>,
    /// Packages of the apt source (NAME or NAME=VERSION)
    #[arg(value_name = "PACKAGE", requires = "apt")]
    pub packages: Vec<String>,
    /// Add the Depends/Pre-Depends closure of the packages too
    #[arg(long, requires = "apt")]
    pub with_deps: bool,
    /// Architecture of a new apt source (default: this machine's)
    #[arg(long, value_name = "ARCH", requires = "apt")]
    pub arch: Option<String>,
    /// Name of a new apt source (default: its suite)
    #[arg(long, value_name = "NAME", requires = "apt")]
    pub source_name: Option<String>,
    /// The keys a new apt source's Release must be signed by, as apt's
    /// Signed-By: keyring files (comma-separated) or an armored key block
    /// (default: the keyrings this machine's apt configuration uses for
    /// the same URL)
    #[arg(
        long,
        value_name = "KEYRING",
        requires = "apt",
        allow_hyphen_values = true
    )]
    pub signed_by: Option<String>,
    /// Trust a new apt source without a signature (a local repository
    /// only); recorded in the lockfile, and said by every later update
    #[arg(long, requires = "apt", conflicts_with = "signed_by")]
    pub allow_unsigned: bool,
    /// Accept a Release past its Valid-Until (a snapshot archive);
    /// recorded in the lockfile
    #[arg(long, requires = "apt")]
    pub no_check_valid_until: bool,
    /// A tarball URL (with --sha256, --name, --version)
    #[arg(long, value_name = "URL", requires_all = ["sha256", "name", "version"])]
    pub tar: Option<String>,
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Component name (--tar, --git, --dir)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Component version (--tar)
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// A git repository path or file:// URL (with --follow and --name)
    #[arg(long, value_name = "URL", requires_all = ["follow", "name"])]
    pub git: Option<String>,
    /// The branch or tag to follow
    #[arg(long, value_name = "BRANCH")]
    pub follow: Option<String>,
    /// A local directory (unpinned; with --name)
    #[arg(long, value_name = "PATH", requires = "name")]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo_path: Option<PathBuf>, cmd: LockCommand) -> Result<ExitCode> {
    match cmd {
        LockCommand::Add(args) => add(&super::open(repo_path)?, *args),
        LockCommand::Update {
            lockfile,
            names,
            json,
            markdown,
            git_commit,
        } => update(
            &super::open(repo_path)?,
            &lockfile,
            &names,
            json,
            markdown,
            git_commit,
        ),
        LockCommand::Verify { lockfile, json } => verify(&super::open(repo_path)?, &lockfile, json),
        LockCommand::Diff { old, new, json } => {
            let old = Lockfile::read(&old)?;
            let new = Lockfile::read(&new)?;
            print_changes(&ops::diff(&old, &new), json, false);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Where `lock add --apt` reads this machine's apt configuration.
const APT_ETC: &str = "/etc/apt";

/// The `signed-by` of a new apt source: `--signed-by` (keyring paths made
/// absolute), else the keyrings apt here uses for the same URL.
fn signed_by(given: Option<&str>, url: &str) -> Result<String> {
    let Some(given) = given else {
        return treectl_lockfiles::apt_trust::machine_signed_by(Path::new(APT_ETC), url)
            .with_context(|| format!("no --signed-by given, and this machine's apt ({APT_ETC}) has no source for {url}; pass --signed-by KEYRING (or --allow-unsigned for a local repository you trust)"));
    };
    if given
        .trim_start()
        .starts_with(treectl_lockfiles::apt_trust::ARMORED_KEY_HEADER)
    {
        return Ok(given.trim().to_owned());
    }
    let mut paths = Vec::new();
    for p in given.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let abs = std::path::absolute(p).with_context(|| format!("keyring path {p}"))?;
        paths.push(abs.to_string_lossy().into_owned());
    }
    if paths.is_empty() {
        bail!("--signed-by is empty: name a keyring file or give an armored key");
    }
    Ok(paths.join(","))
}

fn apt_source(lock: &Lockfile, spec: &str, args: &AddArgs) -> Result<AptSource> {
    let (arch, name) = (args.arch.as_deref(), args.source_name.as_deref());
    if let Some(Source::Apt(s)) = lock.source(spec) {
        if args.signed_by.is_some() || args.allow_unsigned || args.no_check_valid_until {
            bail!("apt source {spec:?} is already in the lockfile with its trust settings; edit its [[source]] to change them");
        }
        return Ok(s.clone());
    }
    let mut words = spec.split_whitespace();
    let (Some(url), Some(suite)) = (words.next(), words.next()) else {
        bail!("apt source {spec:?} is neither a source of the lockfile nor \"URL SUITE [COMPONENT...]\"");
    };
    let components: Vec<String> = words.map(str::to_owned).collect();
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| suite.trim_matches(['/', '.']).replace('/', "-"));
    let name = if name.is_empty() {
        "apt".to_owned()
    } else {
        name
    };
    let signed_by = if args.allow_unsigned {
        None
    } else {
        Some(signed_by(args.signed_by.as_deref(), url)?)
    };
    Ok(AptSource {
        name,
        url: url.to_owned(),
        suite: suite.to_owned(),
        components,
        architecture: arch.unwrap_or(host_arch()).to_owned(),
        signed_by,
        allow_unsigned: args.allow_unsigned,
        check_valid_until: !args.no_check_valid_until,
    })
}

fn add(repo: &Repo, args: AddArgs) -> Result<ExitCode> {
    let mut lock = if args.lockfile.exists() {
        Lockfile::read(&args.lockfile)?
    } else {
        Lockfile::new()
    };
    let req = if !args.deb.is_empty() {
        AddRequest::Debs(args.deb.clone())
    } else if let Some(spec) = &args.apt {
        AddRequest::Apt {
            source: apt_source(&lock, spec, &args)?,
            packages: args.packages.clone(),
            with_deps: args.with_deps,
        }
    } else if let Some(url) = &args.tar {
        AddRequest::Tarball {
            url: url.clone(),
            sha256: args.sha256.clone().context("--tar needs --sha256")?,
            name: args.name.clone().context("--tar needs --name")?,
            version: args.version.clone().context("--tar needs --version")?,
        }
    } else if let Some(url) = &args.git {
        AddRequest::Git {
            url: url.clone(),
            follow: args.follow.clone().context("--git needs --follow")?,
            name: args.name.clone().context("--git needs --name")?,
        }
    } else if let Some(dir) = &args.dir {
        AddRequest::Directory {
            path: dir.clone(),
            name: args.name.clone().context("--dir needs --name")?,
        }
    } else {
        bail!("nothing to add: pass --deb, --apt, --tar, --git or --dir");
    };
    let fetcher = Fetcher::new()?;
    let changes = ops::add(repo, &mut lock, &fetcher, req)?;
    write_if_changed(&lock, &args.lockfile)?;
    print_trust_notes(&lock);
    print_changes(&changes, args.json, false);
    Ok(ExitCode::SUCCESS)
}

/// Writes the lockfile unless its bytes would not change.
fn write_if_changed(lock: &Lockfile, path: &Path) -> Result<bool> {
    let text = lock.to_text();
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    lock.write(path)?;
    Ok(true)
}

fn update(
    repo: &Repo,
    path: &Path,
    names: &[String],
    json: bool,
    markdown: bool,
    git_commit: bool,
) -> Result<ExitCode> {
    let mut lock = Lockfile::read(path)?;
    print_trust_notes(&lock);
    let fetcher = Fetcher::new()?;
    let changes = ops::update(repo, &mut lock, &fetcher, names)?;
    print_changes(&changes, json, markdown);
    if changes.is_empty() {
        return Ok(ExitCode::from(EXIT_UNCHANGED));
    }
    write_if_changed(&lock, path)?;
    if git_commit {
        let message = commit_message(path, &changes);
        let done = treectl_lockfiles::git::commit_file(path, &message)
            .with_context(|| format!("committing {} to git", path.display()))?;
        eprintln!("committed {} as {}", done.rela_path, done.id);
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(repo: &Repo, path: &Path, json: bool) -> Result<ExitCode> {
    let lock = Lockfile::read(path)?;
    let problems = ops::verify(repo, &lock);
    let notes = lock.trust_notes();
    if json {
        println!(
            "{}",
            serde_json::json!({ "components": lock.components.len(), "problems": problems, "trust-notes": notes })
        );
    } else if problems.is_empty() {
        print_trust_notes(&lock);
        println!(
            "{}: {} components, all present and consistent",
            path.display(),
            lock.components.len()
        );
    } else {
        print_trust_notes(&lock);
        for p in &problems {
            println!("{p}");
        }
        eprintln!("{}: {} problem(s) found", path.display(), problems.len());
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    })
}

/// Says on stderr how each apt source is trusted when it is less than a
/// checked signature (`allow-unsigned`, no `Valid-Until` check).
fn print_trust_notes(lock: &Lockfile) {
    for note in lock.trust_notes() {
        eprintln!("note: {note}");
    }
}

fn print_changes(changes: &[Change], json: bool, markdown: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "changes": changes }))
                .expect("changes serialize")
        );
    } else if markdown {
        println!("{}", markdown_body(changes));
    } else if changes.is_empty() {
        println!("no changes");
    } else {
        for c in changes {
            println!("{c}");
        }
    }
}

/// The git commit message of `lock update --git-commit`: a subject, then
/// the same lines as the human summary.
pub fn commit_message(lockfile: &Path, changes: &[Change]) -> String {
    let file = lockfile
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| lockfile.display().to_string());
    let mut s = format!(
        "{file}: update {} component{}\n\n",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    for c in changes {
        s.push_str(&format!("{c}\n"));
    }
    s
}

/// A pull request body listing the changes.
pub fn markdown_body(changes: &[Change]) -> String {
    let mut s = format!(
        "Update {} component{}\n\n| Component | Old | New |\n|---|---|---|\n",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    for c in changes {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            c.name,
            c.old_version.as_deref().unwrap_or("—"),
            c.new_version.as_deref().unwrap_or("—")
        ));
    }
    s
}

use treectl_compose::configure::ConfigureError;

pub fn compose(repo: &Repo, lockfile: &Path, ref_name: &str, json: bool) -> Result<ExitCode> {
    let lock = Lockfile::read(lockfile)?;
    let ref_name = RefName::new(ref_name)?;
    let fetcher = Fetcher::new()?;
    let report = match ops::compose(repo, &lock, &ref_name, &fetcher) {
        Ok(r) => r,
        Err(e) => {
            // The error is one line; what the script printed last goes to
            // the log before it.
            if let treectl_lockfiles::Error::Configure(ConfigureError::Script { tail, .. }) = &e {
                for line in tail.lines() {
                    eprintln!("  | {line}");
                }
            }
            return Err(e.into());
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for d in &report.stats.dirmeta_differences {
            eprintln!(
                "note: directory {} has different metadata in {} and {}; {}'s is kept",
                d.path, d.was, d.now, d.now
            );
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        eprintln!("version {}", report.version);
        println!("{}", report.commit);
    }
    Ok(ExitCode::SUCCESS)
}

fn components_of(repo: &Repo, rev: &str) -> Result<Vec<components::ComposedComponent>> {
    let id = rev_parse(repo, rev)?;
    let commit = repo.read_commit(&id)?;
    match components::commit_components(&commit) {
        Some(r) => r.map_err(|e| anyhow::anyhow!("commit {id}: {e}")),
        None => bail!("commit {id} ({rev}) is not a compose: it records no components"),
    }
}

pub fn show_components(repo: &Repo, rev: &str, json: bool) -> Result<ExitCode> {
    let comps = components_of(repo, rev)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&comps)?);
    } else {
        for c in comps {
            println!("{}\t{}\t{}\t{}", c.name, c.version, c.source, c.commit);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `diff --components URL REV REV`: the component changes between two
/// commits of a server (full commit ids) or a repository path (any
/// revision), read from the two commit objects alone.
pub fn diff_components_at(url: &str, from: &str, to: &str, json: bool) -> Result<ExitCode> {
    if !treectl_transport::http::is_url(url) {
        return diff_components(&Repo::open(Path::new(url))?, from, to, json);
    }
    let target = treectl_transport::push::open_target(url, None, &[])?;
    let read = |rev: &str| -> Result<(ObjectId, Commit)> {
        let id = ObjectId::from_hex(rev).with_context(|| {
            format!("{rev:?} is not a full commit id (a server's revisions are named by id)")
        })?;
        Ok((id, target.read_commit(&id)?))
    };
    let (a, b) = (read(from)?, read(to)?);
    print_changes(&changes_between(&a, &b)?, json, false);
    Ok(ExitCode::SUCCESS)
}

/// The component changes from commit `a` to `b`: the composed lists when
/// both are composes, else the name -> version maps (`component.NAME`
/// metadata, as deployments read them).
fn changes_between(a: &(ObjectId, Commit), b: &(ObjectId, Commit)) -> Result<Vec<Change>> {
    let listed = |(id, c): &(ObjectId, Commit)| {
        components::commit_components(c)
            .map(|r| r.map_err(|e| anyhow::anyhow!("commit {id}: {e}")))
            .transpose()
    };
    if let (Some(x), Some(y)) = (listed(a)?, listed(b)?) {
        return Ok(components::diff_components(&x, &y));
    }
    let (x, y) = (commit_versions(&a.1), commit_versions(&b.1));
    for ((id, _), m) in [(a, &x), (b, &y)] {
        if m.is_empty() {
            bail!("commit {id} records no components");
        }
    }
    Ok(component_changes(&x, &y)
        .into_iter()
        .map(|c| Change {
            kind: match (&c.from, &c.to) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            },
            name: c.name,
            old_version: c.from,
            new_version: c.to,
            old_digest: None,
            new_digest: None,
            old_commit: None,
            new_commit: None,
        })
        .collect())
}

pub fn diff_components(repo: &Repo, from: &str, to: &str, json: bool) -> Result<ExitCode> {
    let read = |rev: &str| -> Result<(ObjectId, Commit)> {
        let id = rev_parse(repo, rev)?;
        Ok((id, repo.read_commit(&id)?))
    };
    let (a, b) = (read(from)?, read(to)?);
    print_changes(&changes_between(&a, &b)?, json, false);
    Ok(ExitCode::SUCCESS)
}
