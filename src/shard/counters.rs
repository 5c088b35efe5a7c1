//! What a shard counts, defined once: the engine increments plain integers on the packet path,
//! the IO layer publishes them for other threads after each pass, and the gateway's stats and
//! the Prometheus series are read from the same struct.

/// Defines [`Counters`] and the array form the IO layer publishes it in.
macro_rules! counters {
    ($( $(#[doc = $doc:expr])* $name:ident, )*) => {
        /// What a shard did and dropped, cumulative since it started; summed over shards for
        /// the gateway ([`crate::Gateway::stats`]) and `/metrics`.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        /// How many counters there are.
        pub const COUNT: usize = [$(stringify!($name)),*].len();

        impl Counters {
            /// The counters in declaration order.
            pub fn to_array(&self) -> [u64; COUNT] {
                [$(self.$name),*]
            }

            pub fn from_array(values: [u64; COUNT]) -> Counters {
                let [$($name),*] = values;
                Counters { $($name),* }
            }
        }
    };
}

counters! {
    /// Datagrams read from the shard's socket.
    datagrams_in,
    /// Datagrams from addresses no session knows (or that failed the session's ICE check).
    datagrams_unknown_source,
    /// Datagrams a session (or the first parse) could not use.
    datagrams_invalid,
    /// RTP packets written to viewers.
    packets_forwarded,
    /// Packets a viewer could not take for want of the publisher's codec.
    packets_no_codec,
    /// Keyframe requests handed to str0m; it may merge several in one instant into one PLI.
    keyframe_requests_sent,
    /// Publishers' video packets given up on: not repaired by NACK in time, so a keyframe
    /// was asked for instead.
    unrepaired_losses,
    /// Viewers started from the GOP cache.
    gop_cache_hits,
    /// Sessions removed for a connect or consent timeout, or because str0m closed them.
    sessions_expired,
    /// str0m calls that panicked; each cost its session (or one datagram or offer) only.
    panics,
    /// NACKs received from viewers. This and the next four move at each statistics event
    /// (every `media.stats_interval_secs`) by what str0m counted since the previous one.
    nacks_received,
    /// NACKs sent to publishers.
    nacks_sent,
    /// PLIs received from viewers.
    plis_received,
    /// PLIs sent to publishers.
    plis_sent,
    /// Packets sent again from viewers' resend buffers.
    packets_retransmitted,
    /// Media packets for another shard dropped because its queue was full.
    shard_media_dropped,
    /// Viewers this shard closed because it stayed overloaded (newest first).
    sessions_shed,
    /// Times the shard's thread panicked outside a session's isolation and was restarted
    /// with a fresh engine (its sessions lost).
    shard_restarts,
    /// Datagrams for an ICE-TCP peer whose connection's write queue was full.
    tcp_send_dropped,
    /// Of `packets_forwarded`, those the gateway's own egress protected and sent (the rest
    /// went through str0m: `media.direct_egress` off, or keys it could not use).
    packets_direct,
    /// Datagrams the shard's UDP socket did not take: its buffer stayed full, or the kernel
    /// refused the send (a gone peer's address, say).
    udp_send_dropped,
    /// Transport-wide feedback packets from viewers that did not parse; ignored.
    twcc_malformed,
}

impl Counters {
    /// Datagrams dropped for any reason.
    pub fn datagrams_dropped(&self) -> u64 {
        self.datagrams_unknown_source + self.datagrams_invalid
    }

    /// Adds another shard's counters.
    pub fn add(&mut self, other: &Counters) {
        let mut sum = self.to_array();
        for (s, o) in sum.iter_mut().zip(other.to_array()) {
            *s += o;
        }
        *self = Counters::from_array(sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_and_add_field_by_field() {
        let a = Counters {
            datagrams_in: 3,
            panics: 1,
            packets_retransmitted: 9,
            ..Counters::default()
        };
        assert_eq!(Counters::from_array(a.to_array()), a);
        let mut sum = a;
        sum.add(&a);
        assert_eq!(
            (sum.datagrams_in, sum.panics, sum.packets_retransmitted),
            (6, 2, 18)
        );
        assert_eq!(sum.packets_forwarded, 0);
    }
}
