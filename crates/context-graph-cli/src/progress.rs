//! Progress bars on stderr for long work, hidden when stderr is not a terminal so that logs
//! and pipes stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar counting `total` items (`None`: a counter without a known end).
pub fn bar(total: Option<u64>, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(total, target());
    let template = match total {
        Some(_) => "{msg:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
        None => "{msg:>14} {spinner} {pos} {per_sec}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb
}
