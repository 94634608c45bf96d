//! A progress bar on stderr, only when stderr is a terminal; a ticker task polls a counter so
//! the request path never touches the bar.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// A drawn progress bar and its ticker.
pub struct Progress {
    bar: ProgressBar,
    ticker: JoinHandle<()>,
    position: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl Progress {
    /// Starts a bar of `len` `unit`s whose position is `position()`; `None` unless `enabled`.
    pub fn start(
        enabled: bool,
        len: u64,
        unit: &'static str,
        position: impl Fn() -> u64 + Send + Sync + Clone + 'static,
    ) -> Option<Progress> {
        if !enabled {
            return None;
        }
        let bar = ProgressBar::new(len);
        let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed_precise}} eta {{eta}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        let ticker = {
            let bar = bar.clone();
            let position = position.clone();
            tokio::spawn(async move {
                loop {
                    bar.set_position(position());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Some(Progress {
            bar,
            ticker,
            position: Box::new(position),
        })
    }

    /// Stops the ticker and clears the bar.
    pub fn finish(self) {
        self.ticker.abort();
        self.bar.set_position((self.position)());
        self.bar.finish_and_clear();
    }
}
