//! `treectl delta`: static deltas in a repository's `deltas/`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use treectl_store::delta::{self, DeltaInfo, DeltaOptions, DELTAS_DIR};
use treectl_store::refs;
use treectl_store::Repo;

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn line(d: &DeltaInfo) -> String {
    format!(
        "{} -> {}: {} bytes, {} objects ({} patched), sha256 {}",
        d.from.map_or("scratch".to_owned(), |f| f.short()),
        d.to.short(),
        d.size,
        d.objects,
        d.patched,
        d.sha256
    )
}

/// `treectl delta generate FROM TO` (or `--from-scratch TO`).
pub fn generate(
    repo: &Repo,
    from: Option<String>,
    to: Option<String>,
    from_scratch: bool,
    json: bool,
) -> Result<ExitCode> {
    // With --from-scratch the one revision given is TO.
    let (from, to) = match (from_scratch, from, to) {
        (true, Some(to), None) => (None, to),
        (false, Some(from), Some(to)) => (Some(from), to),
        _ => anyhow::bail!("give FROM and TO, or --from-scratch TO"),
    };
    let from = from
        .map(|f| refs::rev_parse(repo, &f))
        .transpose()
        .context("resolving FROM")?;
    let to = refs::rev_parse(repo, &to).context("resolving TO")?;
    let info = delta::generate(repo, from.as_ref(), &to, &DeltaOptions::default())
        .with_context(|| format!("generating {}", delta::relative_path(from.as_ref(), &to)))?;
    if json {
        print_json(&info)?;
    } else {
        println!("{}", line(&info));
    }
    Ok(ExitCode::SUCCESS)
}

/// `treectl delta list`.
pub fn list(repo: &Repo, json: bool) -> Result<ExitCode> {
    let dir = repo.path().join(DELTAS_DIR);
    let mut names: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "delta")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    names.sort();
    let mut all = Vec::new();
    for p in names {
        all.push(delta::describe(repo, &p).with_context(|| format!("reading {}", p.display()))?);
    }
    if json {
        print_json(&all)?;
    } else {
        for d in &all {
            println!("{}", line(d));
        }
    }
    Ok(ExitCode::SUCCESS)
}
