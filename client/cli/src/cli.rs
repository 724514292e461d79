//! The command-line interface definition.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use treectl_store::export::{ArchiveFormat, Compression};

#[derive(Parser, Debug)]
#[command(
    name = "treectl",
    version,
    about = "Versioned, content-addressed OS trees: commit, check out, verify, prune",
    after_help = "Exit status: 0 success, 1 error, 2 usage error, 3 fsck found problems."
)]
pub struct Cli {
    /// Repository path (default: $TREECTL_REPO)
    #[arg(long, global = true, env = "TREECTL_REPO", value_name = "PATH")]
    pub repo: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new, empty repository
    Init {
        /// archive: compressed objects, for servers and mirrors;
        /// bare-user: plain objects that checkouts hardlink
        #[arg(long, default_value = "bare-user", value_name = "MODE")]
        mode: treectl_store::RepoMode,
    },
    /// Commit a directory, tar archive, .deb packages or git commit; prints the commit id
    Commit(Box<CommitArgs>),
    /// Show a ref's history, newest first
    Log {
        rev: String,
        /// At most this many commits (counted after --contains)
        #[arg(short = 'n', long)]
        max_count: Option<usize>,
        /// Only commits that ship component NAME (at VERSION), read from their metadata
        #[arg(long, value_name = "NAME[=VERSION]")]
        contains: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a commit: its tree, parent, date, subject and metadata
    Show {
        rev: String,
        /// List the components a composed commit was made of
        #[arg(long)]
        components: bool,
        #[arg(long)]
        json: bool,
    },
    /// List a directory (or one file) of a commit
    Ls {
        rev: String,
        #[arg(default_value = "/")]
        path: String,
        /// List subdirectories too
        #[arg(short = 'R', long)]
        recursive: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write a file's content from a commit to standard output
    Cat { rev: String, path: String },
    /// List the paths that differ between two commits
    Diff {
        /// A revision; with --components and three arguments, the server URL or repository path
        from: String,
        to: String,
        /// With --components: the second revision, when the first argument is a URL or path
        #[arg(requires = "components")]
        third: Option<String>,
        /// Compare the components of two commits instead of paths (from commit objects alone)
        #[arg(long)]
        components: bool,
        #[arg(long)]
        json: bool,
    },
    /// List refs, or delete one
    Refs {
        /// Delete this ref (its commits stay until `treectl prune`)
        #[arg(long, value_name = "REF")]
        delete: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Point a ref at a commit (for example back at an earlier one)
    Reset { r#ref: String, rev: String },
    /// Print the commit id a revision names (REF, ID, ID prefix, REV^, REV~N)
    RevParse { rev: String },
    /// Pin components in a lockfile: add, update (bump), verify, diff
    #[command(subcommand)]
    Lock(crate::cmd::lock::LockCommand),
    /// Merge a lockfile's components into one tree and commit it to REF
    Compose {
        #[arg(long, value_name = "FILE")]
        lockfile: PathBuf,
        #[arg(long = "ref", value_name = "REF")]
        r#ref: String,
        #[arg(long)]
        json: bool,
    },
    /// Check a commit out into a new directory
    Checkout {
        rev: String,
        dest: PathBuf,
        /// Write copies instead of hardlinks to the store
        #[arg(long)]
        copy: bool,
        /// Check out only this path of the tree
        #[arg(long, value_name = "PATH")]
        subpath: Option<String>,
        /// Check out over an existing directory: directories are reused,
        /// files replaced (like `ostree checkout --union`)
        #[arg(long)]
        union: bool,
    },
    /// Write a commit's tree as one cpio (initramfs) or tar archive
    Export {
        /// The commit: a ref, a commit id or prefix, REV^, REV~N
        rev: String,
        /// cpio: newc, what the kernel unpacks as an initramfs; tar: GNU tar
        #[arg(long, value_name = "FORMAT", value_parser = archive_format())]
        format: ArchiveFormat,
        /// Write the archive to FILE (replaced only once complete) instead of standard output
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Compress the archive
        #[arg(long, value_name = "METHOD", default_value = "none", value_parser = compression())]
        compress: Compression,
        /// Print what was written as JSON (needs -o: standard output is the archive)
        #[arg(long, requires = "output")]
        json: bool,
    },
    /// Verify every object, link and ref; exit status 3 when anything is wrong
    Fsck {
        /// Remove corrupt objects and mark the commits that need them partial
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete objects no ref needs
    Prune {
        /// Drop history commits older than this (for example 30d, 12h)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        keep_younger_than: Option<std::time::Duration>,
        /// Keep at most N ancestors of each ref (0: only the head)
        #[arg(long, value_name = "N")]
        depth: Option<u64>,
        /// Show what would be deleted, delete nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Generate an ed25519 signing key in FILE and its public half in FILE.pub
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Signing keys in band: list a target's key sets, or rotate to a new one
    #[command(subcommand)]
    Key(KeyCommand),
    /// Static deltas: one file with every object a commit adds to another
    #[command(subcommand)]
    Delta(DeltaCommand),
    /// Serve the repository over HTTP (runs `treectl-server`; `treectl serve --help` shows its options)
    #[command(disable_help_flag = true)]
    Serve {
        /// --listen ADDR [--sign-key FILE] [--tokens FILE] ... (passed to treectl-server)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// Upload a ref's commit and what it needs (only what the target lacks), then publish it
    Push {
        /// Server URL (http://, https://) or local repository path
        url: String,
        r#ref: String,
        /// Publish even a commit the ref was reverted away from (lifts its rejection)
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        release: ReleaseArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Publish REF at REV (a commit the target already has) in the signed ref index
    Publish {
        url: String,
        r#ref: String,
        /// A commit id, or (with --repo) any revision of the local repository
        rev: String,
        /// Publish even a commit the ref was reverted away from (lifts its rejection)
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        release: ReleaseArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Change the phased rollout of REF's head: a PERCENT of machines, pause, resume or complete
    Rollout {
        url: String,
        r#ref: String,
        /// PERCENT (0 to 100), pause, resume or complete
        action: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Pause every publish of REF (pushes and publishes are refused with the reason) until `release`
    Hold {
        url: String,
        r#ref: String,
        /// Why (shown to everyone whose publish is refused, and in the history)
        #[arg(long, value_name = "TEXT")]
        reason: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Lift the hold on REF
    Release {
        url: String,
        r#ref: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Publish a new release of REF whose tree is an earlier one's
    Revert {
        url: String,
        r#ref: String,
        /// The revision whose tree to restore (default: the head published before the current one)
        #[arg(long, value_name = "REV")]
        to: Option<String>,
        /// Why (recorded in the commit and the history)
        #[arg(long, value_name = "TEXT")]
        reason: String,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Manage remotes: servers and mirrors to pull published refs from
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Fetch a published ref (REMOTE:REF) with full verification into refs/remotes/REMOTE/REF
    Pull(PullArgs),
    /// List every publish, revert, hold and release of REF, oldest first
    History {
        url: String,
        r#ref: String,
        /// Under each release, the components it changed (from commit objects alone)
        #[arg(long)]
        components: bool,
        /// Only releases that shipped component NAME (at VERSION)
        #[arg(long, value_name = "NAME[=VERSION]")]
        contains: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Publish on TO exactly the commit FROM has now (no rebuild), with a history entry on both
    Promote {
        url: String,
        from: String,
        to: String,
        /// Promote even a commit TO was reverted away from
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    #[command(flatten)]
    Sysroot(crate::cli_sysroot::SysrootCommand),
}

/// `treectl delta ...`.
#[derive(Subcommand, Debug)]
pub enum DeltaCommand {
    /// Write the delta FROM -> TO into the repository's deltas/ (or report the one there)
    Generate {
        /// The commit clients have (a revision); omit with --from-scratch
        #[arg(required_unless_present = "from_scratch")]
        from: Option<String>,
        /// The commit clients get (a revision)
        #[arg(required_unless_present = "from")]
        to: Option<String>,
        /// Every object of TO (the only revision given), for clients that have nothing
        #[arg(long, conflicts_with = "to")]
        from_scratch: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the deltas in the repository's deltas/
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `treectl key ...`.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// List the key sets of a server, mirror or local repository (oldest first) and the keys
    /// that signed its index; with --remote, the keys this client trusts for a remote
    List {
        /// Server or mirror URL (http://, https://) or local repository path
        #[arg(required_unless_present = "remote", conflicts_with = "remote")]
        target: Option<String>,
        /// A remote of this repository (--repo): its configured keys and the key set it follows
        #[arg(long, value_name = "NAME")]
        remote: Option<String>,
        /// Read the bearer token from FILE (default: $TREECTL_TOKEN)
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Rotate the index's signing keys to a new key set, signed by the current set's keys and
    /// the new ones; clients follow it from the keys they trust, and dropped keys stop counting
    Rotate {
        /// Server URL (it signs with its own --sign-key keys, which must include the new ones)
        /// or local repository path (signed with --sign-key and the secret --new-key files)
        url: String,
        /// A key of the new set: a public key file, or a secret key file whose public half is
        /// used (and which signs, for a local repository). Repeatable
        #[arg(long, value_name = "FILE", required = true)]
        new_key: Vec<PathBuf>,
        /// How many keys of the new set must sign the index
        #[arg(long, value_name = "N", default_value_t = 1)]
        threshold: u32,
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// `treectl remote ...`.
#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Add a remote: a treectl server or a static mirror of a repository
    Add {
        name: String,
        /// http:// or https:// URL of the repository
        url: String,
        /// Public key (FILE.pub from `treectl keygen`) whose signatures the index and commits need (repeatable)
        #[arg(long, value_name = "FILE")]
        trusted_key: Vec<PathBuf>,
        /// Another URL serving the same repository, tried in order when the URL fails (repeatable)
        #[arg(long, value_name = "URL")]
        mirror: Vec<String>,
    },
    /// List remotes
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a remote, its trust state and its pulled refs
    Remove { name: String },
}

/// How objects are fetched: shared by `pull`, `install` and `upgrade`.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// Requests in flight at once
    #[arg(long, short = 'j', default_value_t = 8, value_name = "N")]
    pub jobs: usize,
    /// Limit for one request, body included
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// Abort (and retry) a transfer slower than this many bytes per second...
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub low_speed_limit: u64,
    /// ...for this long
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub low_speed_time: std::time::Duration,
    /// Retries of a timeout, 5xx or cut transfer before trying the next mirror
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// First retry delay (doubles each time)
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub retry_delay: std::time::Duration,
    /// Largest ref index accepted (K, M, G suffixes allowed)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "16M")]
    pub max_index_size: u64,
    /// Largest object accepted, as sent and uncompressed
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1G")]
    pub max_object_size: u64,
    /// Store fetched files every N objects (what an interrupted pull keeps)
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub commit_every: usize,
    /// Use per-object GETs even when the server offers the batched fetch
    #[arg(long)]
    pub no_batch: bool,
    /// From a static mirror, ignore its packs: one GET per object
    #[arg(long)]
    pub no_packs: bool,
    /// Fetch by objects even when the signed index lists a static delta
    #[arg(long)]
    pub no_delta: bool,
    /// Read a bearer token from FILE (default: $TREECTL_TOKEN), for servers that require one for reads
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `treectl pull REMOTE:REF`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// REMOTE:REF, for example origin:os/stable
    pub target: String,
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Progress and the result as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
}

/// How a release is published.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// Roll the release out to PERCENT of machines first (see `treectl rollout`)
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rollout: Option<u8>,
    /// Every machine must deploy this release before any later one
    #[arg(long)]
    pub barrier: bool,
}

/// Options shared by the commands that talk to a server or a local repository.
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// Read the bearer token from FILE (default: $TREECTL_TOKEN)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// When the target is a local repository: the key that signs the index and commits
    /// (repeatable: after a key rotation, the keys of the current key set sign)
    #[arg(long, value_name = "FILE")]
    pub sign_key: Vec<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["tree", "tar", "deb", "git"])))]
pub struct CommitArgs {
    /// The ref to move to the new commit (required except with --deb, whose
    /// default is deb/<Package>/<Version>/<Architecture>)
    #[arg(long = "ref", value_name = "REF")]
    pub ref_name: Option<String>,
    /// Commit this directory
    #[arg(long, value_name = "DIR")]
    pub tree: Option<PathBuf>,
    /// Commit the tree of this tar archive (plain, gzip, xz, zstd or bzip2)
    #[arg(long, value_name = "FILE")]
    pub tar: Option<PathBuf>,
    /// Commit these Debian packages, each into its own tree and ref
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub deb: Vec<PathBuf>,
    /// Commit a git commit's tree from this repository (with --rev)
    #[arg(long, value_name = "REPO", requires = "rev")]
    pub git: Option<PathBuf>,
    /// The git revision: a branch, a tag, HEAD or a full commit id
    #[arg(long, value_name = "REV", requires = "git", conflicts_with_all = ["tree", "tar", "deb"])]
    pub rev: Option<String>,
    /// Skip device nodes and fifos in archives (reported) instead of refusing them
    #[arg(long)]
    pub allow_devices: bool,
    /// Largest archive entry, in bytes (K, M, G suffixes allowed)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1G")]
    pub max_entry_size: u64,
    /// Largest uncompressed archive, in bytes (K, M, G suffixes allowed)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "8G")]
    pub max_total_size: u64,
    /// Largest ratio of uncompressed to compressed size
    #[arg(long, value_name = "N", default_value_t = treectl_import::limits::DEFAULT_MAX_RATIO)]
    pub max_ratio: u64,
    /// Largest number of entries in one archive
    #[arg(long, value_name = "N", default_value_t = treectl_import::limits::DEFAULT_MAX_ENTRIES)]
    pub max_entries: u64,
    #[arg(long, short = 's', default_value = "")]
    pub subject: String,
    #[arg(long, short = 'm', default_value = "")]
    pub body: String,
    /// Commit time, RFC 3339 (default: $SOURCE_DATE_EPOCH, else now; for
    /// --deb the newest mtime in data.tar, for --git the committer time)
    #[arg(long, value_name = "RFC3339")]
    pub timestamp: Option<String>,
    /// Metadata entry (repeatable)
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Print the id and statistics as JSON
    #[arg(long)]
    pub json: bool,
}

/// `--format`: the store's format names, listed in `--help`.
fn archive_format() -> impl TypedValueParser<Value = ArchiveFormat> {
    PossibleValuesParser::new(ArchiveFormat::ALL.map(ArchiveFormat::name)).try_map(|s| s.parse())
}

/// `--compress`: the store's compression names, listed in `--help`.
fn compression() -> impl TypedValueParser<Value = Compression> {
    PossibleValuesParser::new(Compression::ALL.map(Compression::name)).try_map(|s| s.parse())
}

/// Parses `123`, `64K`, `512M`, `1G` (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        Some((i, 'T' | 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!(
                "invalid size {text:?}: expected a number of bytes, optionally with K, M, G or T"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert!(parse_size("G").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn commit_sources_are_exclusive() {
        let ok = Cli::try_parse_from(["treectl", "commit", "--deb", "a.deb", "b.deb"]);
        assert!(ok.is_ok());
        for bad in [
            &["treectl", "commit", "--ref", "x"][..],
            &[
                "treectl", "commit", "--ref", "x", "--tree", "d", "--tar", "t",
            ],
            &["treectl", "commit", "--ref", "x", "--git", "g"],
            &[
                "treectl", "commit", "--ref", "x", "--tar", "t", "--rev", "main",
            ],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
