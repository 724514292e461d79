//! The command-line interface of the client-host commands (`install`,
//! `status`, `upgrade`, ...), flattened into [`crate::cli::Command`].
//! `docs/deployments.md` describes what they do.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::TransferArgs;

/// Where the sysroot is.
#[derive(Args, Debug, Clone)]
pub struct SysrootArg {
    /// The machine's root directory (an image being built, or `/`)
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub sysroot: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum SysrootCommand {
    /// Create a sysroot with its first deployment of NAME:REF (or of REF in --from-repo PATH)
    Install(InstallArgs),
    /// Show the deployments: default, rollback, booted, staged, pinned
    Status {
        #[command(flatten)]
        sysroot: SysrootArg,
        #[arg(long)]
        json: bool,
    },
    /// Fetch the origin's head and deploy it as the new default (exit 10 from --check: an update exists)
    Upgrade(UpgradeArgs),
    /// Deploy a commit, ref or version as the new default
    Deploy {
        #[command(flatten)]
        sysroot: SysrootArg,
        rev: String,
        /// Stage it for the next boot instead of switching now
        #[arg(long)]
        stage: bool,
    },
    /// Make the rollback deployment the default (again to swap back)
    Rollback {
        #[command(flatten)]
        sysroot: SysrootArg,
    },
    /// Switch to the staged deployment (run at shutdown by treectl-finalize-staged.service)
    FinalizeStaged {
        #[command(flatten)]
        sysroot: SysrootArg,
        /// Change nothing: report the last finalize failure, if any, and
        /// exit 1 when there is one (treectl-finalize-failed.service)
        #[arg(long)]
        check: bool,
    },
    /// Keep the deployment at INDEX through cleanup
    Pin {
        #[command(flatten)]
        sysroot: SysrootArg,
        index: usize,
    },
    /// Let cleanup remove the deployment at INDEX again
    Unpin {
        #[command(flatten)]
        sysroot: SysrootArg,
        index: usize,
    },
    /// Remove deployments that are not booted, default, rollback, pinned or staged; prune the local repository
    Cleanup {
        #[command(flatten)]
        sysroot: SysrootArg,
        #[arg(long)]
        json: bool,
    },
    /// Mark the booted deployment's boot entry good (stop boot counting)
    BootOk {
        #[command(flatten)]
        sysroot: SysrootArg,
    },
    /// Show or edit the kernel arguments of the next boot; an edit deploys the same commit again with them
    Kargs(KargsArgs),
}

/// `treectl kargs`.
#[derive(Args, Debug)]
pub struct KargsArgs {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Append ARG (repeatable; also when already present, as console= may repeat)
    #[arg(long, value_name = "ARG")]
    pub append: Vec<String>,
    /// Append ARG unless exactly ARG is present (repeatable)
    #[arg(long, value_name = "ARG")]
    pub append_if_missing: Vec<String>,
    /// Delete KEY=VALUE, or the one argument with key KEY (repeatable)
    #[arg(long, value_name = "ARG")]
    pub delete: Vec<String>,
    /// Like --delete, without an error when ARG is absent (repeatable)
    #[arg(long, value_name = "ARG")]
    pub delete_if_present: Vec<String>,
    /// Replace KEY=OLD with KEY=NEW, or the one argument with key KEY by KEY=NEW (repeatable)
    #[arg(long, value_name = "KEY=[OLD=]NEW")]
    pub replace: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// `treectl install`.
#[derive(Args, Debug)]
pub struct InstallArgs {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// NAME:REF of a configured remote, or REF with --from-repo
    pub source: String,
    /// Take commits from this local repository instead of a remote
    #[arg(long, value_name = "PATH", conflicts_with_all = ["url", "mirror", "trusted_key"])]
    pub from_repo: Option<PathBuf>,
    /// Add remote NAME with this URL to the new sysroot before pulling
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Mirror of the remote, tried in order after --url (repeatable)
    #[arg(long, value_name = "URL")]
    pub mirror: Vec<String>,
    /// Trust content signed by this key (repeatable); without one, pulls check integrity only
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Vec<PathBuf>,
    /// The operating system's name (its deployments share /var)
    #[arg(long, default_value = treectl_sysroot::DEFAULT_STATEROOT, value_name = "NAME")]
    pub stateroot: String,
    /// The root= kernel argument's value (UUID=..., /dev/vda2, LABEL=...); default: the UUID of the filesystem DIR is the root of, else none
    #[arg(long, value_name = "ARG")]
    pub root_arg: Option<String>,
    /// A further kernel argument of the first deployment (repeatable)
    #[arg(long, value_name = "ARG")]
    pub karg: Vec<String>,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// `treectl upgrade`.
#[derive(Args, Debug)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Only say whether an update exists (exit 10 if so, 0 if not)
    #[arg(long, conflicts_with_all = ["preview", "download_only", "stage"])]
    pub check: bool,
    /// Say what would change (components and versions), change nothing (exit 10 if an update exists)
    #[arg(long, conflicts_with_all = ["download_only", "stage"])]
    pub preview: bool,
    /// Fetch the update into the local repository, do not deploy it
    #[arg(long, conflicts_with = "stage")]
    pub download_only: bool,
    /// Prepare the deployment now; `treectl finalize-staged` switches at shutdown
    #[arg(long)]
    pub stage: bool,
    /// Accept a head older than the default deployment (a replay or a reset ref)
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Take a release that is being rolled out in waves now, whatever this machine's wave
    #[arg(long)]
    pub ignore_rollout: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}
