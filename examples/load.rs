//! Fan-out load on a WHIP/WHEP server: one synthetic H264 + Opus publisher, N WHEP viewers
//! joining at a chosen rate, a few of them checking every frame. Prints a table and a JSON line.
//!
//! cargo run --release --example load -- http://127.0.0.1:8080 --viewers 500 --pid "$(pidof wishcast)"
//!
//! The machinery is `wishcast::client::load`; `scripts/bench-fanout.sh` steps the viewer count.

use std::io::Write;
use std::process::exit;

use wishcast::client::load::{self, LoadConfig};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", load::USAGE);
        return;
    }
    let config = match LoadConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\n{}", load::USAGE);
            exit(2);
        }
    };
    match load::run(&config).await {
        Ok(report) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}\n{}", report.table(), report.json());
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit(1);
        }
    }
}
