//! The load tool's whole code path (`wishcast::client::load`, which `examples/load.rs` and
//! `scripts/bench-fanout.sh` run), bounded to a dozen viewers and seconds: its command line, the
//! publisher, the ramp, both kinds of viewer, the steady phase, `/proc` readings, the report and
//! the teardown. The gateway runs in this process, so CPU and memory are the test's own; the
//! figures are checked for being measured and consistent, not for speed.

mod common;

use common::*;
use wishcast::client::load::{self, LoadConfig, LoadReport};

const VIEWERS: usize = 12;
const SAMPLED: usize = 3;

async fn bounded_run(sink: &str) -> LoadReport {
    let gw = start(test_config(1)).await;
    let args = format!(
        "http://{} --stream load-{sink} --viewers {VIEWERS} --rate 20 --seconds 3 --samples \
         {SAMPLED} --settle 1 --after 0 --sink {sink} --pid {}",
        gw.http_addr(),
        std::process::id()
    );
    let config = LoadConfig::from_args(args.split_whitespace().map(String::from)).expect("args");
    let report = load::run(&config).await.expect("the run completes");
    eprintln!("{}", report.table());
    // Every session was deleted at the end.
    let streams = wishcast::client::http::request(
        "GET",
        &format!("http://{}/api/streams", gw.http_addr()),
        &[],
        Vec::new(),
    )
    .await
    .expect("the API answers")
    .text();
    assert!(
        !streams.contains("\"viewers\":1"),
        "no viewer left: {streams}"
    );
    gw.shutdown().await;
    report
}

/// What a reader of the report relies on.
fn check(r: &LoadReport, sink: &str) {
    assert_eq!(r.sink, sink);
    assert_eq!(
        (r.connected, r.failed, r.closed, r.refused.len()),
        (VIEWERS, 0, 0, 0),
        "every viewer joined and stayed: {r:?}"
    );
    assert_eq!(r.sampled, SAMPLED);
    // 3 s of 30 fps at each sampled viewer, give or take the edges of the phase.
    assert!(r.frames_expected >= (SAMPLED * 80) as u64, "{r:?}");
    assert_eq!((r.frames_lost, r.frames_corrupt), (0, 0), "{r:?}");
    assert_eq!(r.lost_pct, Some(0.0));
    // 2.5 Mbit/s of H264 in about 1,100-byte packets plus 50 Opus packets a second.
    let pps = r.packets_per_viewer_s.expect("packet rate measured");
    assert!((250.0..450.0).contains(&pps), "{pps} packets/s");
    // The sink keeps the media away from the cheap viewers' user space.
    assert!(r.media_read_per_viewer_s < 1.0, "{r:?}");
    for (name, v) in [
        ("cpu", r.cpu_cores),
        ("µs/packet/viewer", r.us_per_packet_viewer),
        ("rss", r.rss_mib),
        ("rss base", r.rss_base_mib),
        ("latency p50", r.latency_ms_p50),
        ("ttff p99", r.ttff_ms_p99),
        ("connect p99", r.connect_ms_p99),
        ("load cpu", r.load_cpu_cores),
    ] {
        assert!(v.is_some_and(|v| v > 0.0), "{name} measured: {r:?}");
    }
    assert!(r.ttff_ms_p50 <= r.ttff_ms_p99 && r.latency_ms_p50 <= r.latency_ms_p99);
    assert!(r.kib_per_viewer.is_some() && r.joins_per_s > 0.0);
    assert!(r.cpu_wait_cores.is_some() && r.sampled_socket_drops.is_some());
    let json: serde_json::Value = serde_json::from_str(&r.json()).expect("one JSON line");
    assert_eq!(json["connected"], VIEWERS);
    assert_eq!(json["frames_lost"], 0);
    assert!(json["us_per_packet_viewer"].is_f64());
    let table = r.table();
    assert!(table.starts_with("viewers") && table.contains(&format!("sink {sink}")));
}

/// Cheap viewers behind a BPF socket filter: needs no privileges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_run_with_socket_filters() {
    let r = bounded_run("bpf").await;
    check(&r, "bpf");
    // The filter dropped the cheap viewers' media in the kernel, about a stream's worth each.
    if let (Some(drops), Some(pps)) = (r.socket_drops_per_viewer_s, r.packets_per_viewer_s) {
        assert!(
            drops > pps * 0.5,
            "{drops} drops/s per cheap viewer at {pps} packets/s"
        );
    }
}

/// Cheap viewers behind an nftables rule: needs root and `nft` (CI has both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_run_with_nftables() {
    let required = std::env::var("WISHCAST_NETADMIN").is_ok_and(|v| v == "require");
    let usable = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable && !required {
        eprintln!("skipped: --sink nft needs root and nft");
        return;
    }
    let r = bounded_run("nft").await;
    check(&r, "nft");
    // The rule sees each GSO send (a frame's packets to one viewer) as one datagram: at least a
    // datagram per video frame (30/s) and per Opus packet (50/s) reached it for each viewer.
    let drops = r.nft_drops_per_viewer_s.expect("the rule counts");
    assert!(drops > 0.8 * 80.0, "{drops} drops/s per cheap viewer");
}
