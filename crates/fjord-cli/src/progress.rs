//! Progress bars for long operations (producing a file, consuming a count, inspecting a big
//! segment). They draw on stderr and only when stdout is a terminal, so output piped into
//! another program, or captured by a test, never contains them.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` units (`bytes` or items), hidden when stdout is not a terminal.
pub fn bar(total: u64, bytes: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), draw_target());
    let template = if bytes {
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({eta})"
    } else {
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn draw_target() -> ProgressDrawTarget {
    if std::io::stdout().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
