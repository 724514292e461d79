//! The progress display of a transfer: an indicatif bar on a terminal (objects, bytes,
//! rate, ETA), JSON lines on stdout for bots (`--json`), nothing otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use treectl_transport::progress::{self, Counters};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Bar,
    Json,
    Quiet,
}

impl ProgressMode {
    /// JSON lines with `--json`, a bar when stderr is a terminal, else quiet.
    pub fn pick(json: bool) -> ProgressMode {
        if json {
            ProgressMode::Json
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Quiet
        }
    }
}

/// A running progress display; stopped by [`Progress::finish`] or on drop.
pub struct Progress {
    counters: Arc<Counters>,
    phase: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Progress {
    pub fn start(mode: ProgressMode, label: String) -> Progress {
        let counters = Arc::new(Counters::default());
        let phase = Arc::new(Mutex::new("metadata"));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = (mode != ProgressMode::Quiet).then(|| {
            let (c, p, s) = (counters.clone(), phase.clone(), stop.clone());
            std::thread::spawn(move || display(mode, &label, &c, &p, &s))
        });
        Progress {
            counters,
            phase,
            stop,
            handle: Mutex::new(handle),
        }
    }
}

impl progress::Progress for Progress {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn phase(&self, name: &'static str) {
        *self.phase.lock().expect("phase poisoned") = name;
    }

    /// Stops the display (after one last update).
    fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.lock().expect("handle poisoned").take() {
            // Wake the display from its pause, so finishing takes no wait.
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        progress::Progress::finish(self);
    }
}

fn display(
    mode: ProgressMode,
    label: &str,
    c: &Counters,
    phase: &Mutex<&'static str>,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let bar = (mode == ProgressMode::Bar).then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {wide_bar} {pos}/{len} objects, {msg}, ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(label.to_owned());
        bar
    });
    let mut last_json = Instant::now() - Duration::from_secs(10);
    let mut last_line = String::new();
    loop {
        let done = stop.load(Ordering::Relaxed);
        let objects = c.objects_done.load(Ordering::Relaxed);
        let total = c.objects_total.load(Ordering::Relaxed);
        let bytes = c.bytes.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let ph = *phase.lock().expect("phase poisoned");
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(objects);
            bar.set_message(format!(
                "{} at {}/s ({ph})",
                HumanBytes(bytes),
                HumanBytes((bytes as f64 / secs) as u64)
            ));
        } else if done || last_json.elapsed() >= Duration::from_millis(500) {
            let line = serde_json::json!({
                "event": "progress",
                "phase": ph,
                "objects_done": objects,
                "objects_total": total,
                "bytes": bytes,
            })
            .to_string();
            if line != last_line {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
                last_line = line;
            }
            last_json = Instant::now();
        }
        if done {
            break;
        }
        // Woken early by `finish` (spurious wake-ups only redraw).
        std::thread::park_timeout(Duration::from_millis(100));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
