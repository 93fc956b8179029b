//! Start-up progress for people: one step at a time, what is happening and how long it took.
//!
//! On a terminal a step is a spinner line (`⠋ Reading stack SecureDbConnectionStack…`) that turns
//! into `✓ Read stack SecureDbConnectionStack (142 ms)` or `✗ …`; elsewhere (logs, CI, pipes) the
//! same steps are plain lines, one when a step starts and one when it ends. Everything goes to
//! stderr, so stdout stays for what scripts read (the listening lines, `dsn`, `token`). `-q`
//! silences it.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where steps are shown.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Spinner,
    Lines,
    Quiet,
}

impl Progress {
    /// A spinner on a terminal, plain lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Spinner
        } else {
            Mode::Lines
        };
        Self { mode }
    }

    /// No output (tests, embedding).
    pub fn quiet() -> Self {
        Self { mode: Mode::Quiet }
    }

    /// Starts a step described by `doing` ("Reading stack X").
    pub fn step(&self, doing: impl Into<String>) -> Step {
        let doing = doing.into();
        let done = Arc::new(AtomicBool::new(false));
        let spinner = match self.mode {
            Mode::Spinner => {
                let (doing, done) = (doing.clone(), done.clone());
                Some(tokio::spawn(async move {
                    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
                    let started = Instant::now();
                    for i in 0usize.. {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        let secs = started.elapsed().as_secs();
                        {
                            let mut err = std::io::stderr().lock();
                            let _ = write!(err, "\r\x1b[2K{} {doing}… {secs}s", FRAMES[i % 10]);
                            let _ = err.flush();
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }))
            }
            Mode::Lines => {
                eprintln!("… {doing}");
                None
            }
            Mode::Quiet => None,
        };
        Step {
            mode: self.mode,
            doing,
            started: Instant::now(),
            done,
            spinner,
        }
    }
}

/// A step in progress; end it with [`Step::ok`] or [`Step::fail`] (dropping it ends it quietly).
pub struct Step {
    mode: Mode,
    doing: String,
    started: Instant,
    done: Arc<AtomicBool>,
    spinner: Option<tokio::task::JoinHandle<()>>,
}

impl Step {
    /// Ends the step as done, with a short result ("ecs:bastion_…").
    pub fn ok(self, result: impl AsRef<str>) {
        self.finish('✓', result.as_ref());
    }

    /// Ends the step as failed, with the reason.
    pub fn fail(self, reason: impl AsRef<str>) {
        self.finish('✗', reason.as_ref());
    }

    fn finish(mut self, mark: char, text: &str) {
        self.stop();
        if self.mode == Mode::Quiet {
            return;
        }
        let took = format_duration(self.started.elapsed());
        let sep = if text.is_empty() { "" } else { ": " };
        let clear = if self.mode == Mode::Spinner {
            "\r\x1b[2K"
        } else {
            ""
        };
        eprintln!("{clear}{mark} {}{sep}{text} ({took})", self.doing);
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(s) = self.spinner.take() {
            s.abort();
            if self.mode == Mode::Spinner {
                eprint!("\r\x1b[2K");
            }
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `142 ms`, `2.4 s`.
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(142)), "142 ms");
        assert_eq!(format_duration(Duration::from_millis(2440)), "2.4 s");
    }
}
