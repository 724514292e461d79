//! The command-line interface definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
        mode: treectl_repo::RepoMode,
    },
    /// Commit a directory tree and move a ref to it; prints the commit id
    Commit(CommitArgs),
    /// Show a ref's history, newest first
    Log {
        rev: String,
        /// At most this many commits
        #[arg(short = 'n', long)]
        max_count: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Show a commit: its tree, parent, date, subject and metadata
    Show {
        rev: String,
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
        from: String,
        to: String,
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
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// The ref to move to the new commit
    #[arg(long = "ref", value_name = "REF")]
    pub ref_name: String,
    /// Commit this directory
    #[arg(long, value_name = "DIR")]
    pub tree: PathBuf,
    #[arg(long, short = 's', default_value = "")]
    pub subject: String,
    #[arg(long, short = 'm', default_value = "")]
    pub body: String,
    /// Commit time, RFC 3339 (default: $SOURCE_DATE_EPOCH, else now)
    #[arg(long, value_name = "RFC3339")]
    pub timestamp: Option<String>,
    /// Metadata entry (repeatable)
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Print the id and statistics as JSON
    #[arg(long)]
    pub json: bool,
}
