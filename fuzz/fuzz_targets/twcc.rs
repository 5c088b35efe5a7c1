//! A viewer's transport-wide feedback on its way to the delay detector: any FCI bytes, parsed
//! and fed to a detector that has sent packets under the numbers the feedback may name.
//!
//! What must hold: no panic; a parse either fails and leaves nothing, or reports at most the
//! statuses the FCI's count allows, each arrival derived from the reference time.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wishcast::twcc::{self, DelayDetector};

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    match twcc::parse(data, &mut out) {
        Ok(()) => {
            let count = u16::from_be_bytes([data[2], data[3]]) as usize;
            assert_eq!(out.len(), count);
        }
        Err(_) => assert!(out.is_empty()),
    }
    let t0 = Instant::now();
    let mut d = DelayDetector::new(t0);
    for i in 0..600u64 {
        d.sent(t0 + Duration::from_millis(i), 1200);
    }
    let _ = d.on_feedback(data);
    let _ = d.on_feedback(data);
    let _ = d.acked_bps();
});
