//! ICE over TCP (RFC 6544): the node's one TCP port, and the connections on it.
//!
//! Every datagram travels as one RFC 4571 frame: a 16-bit big-endian length, then the bytes.
//! A client opens the connection (the gateway's candidates are passive) and its first frame is
//! an ICE check, whose USERNAME names the session's local ufrag; the directory knows which
//! shard has that ufrag ([`Hub::shard_for_ufrag`]), and the connection is handed to that
//! shard's thread. There a reader task feeds frames to the engine and a writer task sends what
//! the engine addresses to the connection's remote address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use super::io::ShardLink;
use crate::hub::Hub;
use crate::stun;

/// Longest frame taken: a datagram the size of a jumbo MTU. Longer ones close the connection.
const MAX_FRAME: usize = 9000;
/// How long a new connection may take to send its first check.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(5);
/// Frames waiting to be written to one connection; more are dropped, as a full UDP socket
/// buffer would.
const WRITE_QUEUE: usize = 1024;
/// Frames from all of a shard's connections waiting for its engine. A full queue holds the
/// readers back, and TCP's own flow control the clients.
const READ_QUEUE: usize = 4096;
/// Connections waiting for their first check, node-wide; more are closed at once, so a flood
/// of idle connections costs at most this many sockets for at most `FIRST_FRAME_WAIT`.
const MAX_PENDING: usize = 1024;
/// Connections a shard keeps at once; more are closed. Each serves one session's path, so this
/// is far above what the shard's sessions can use.
const MAX_PER_SHARD: usize = 16_384;

/// A connection whose first check named a session of the receiving shard.
pub struct TcpConn {
    pub stream: std::net::TcpStream,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The first frame, already read.
    pub first: Vec<u8>,
}

/// What the connections of a shard tell its thread.
pub enum TcpEvent {
    Frame {
        remote: SocketAddr,
        local: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        remote: SocketAddr,
        /// Which connection from `remote` (a reconnect reuses nothing of the old one).
        conn: u64,
    },
}

/// Reads one RFC 4571 frame; `None` at a clean end of the stream.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    Ok(Some(data))
}

/// Accepts ICE-TCP connections on `listener` for as long as the gateway runs, handing each
/// to the shard whose session its first check names; others are closed.
pub async fn accept(listener: TcpListener, hub: Arc<Hub>, shards: Arc<Vec<ShardLink>>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                debug!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            debug!(%remote, "ICE-TCP connection refused: too many waiting for a check");
            continue;
        };
        let (hub, shards) = (hub.clone(), shards.clone());
        tokio::spawn(async move {
            if let Err(why) = route(stream, remote, &hub, &shards).await {
                debug!(%remote, why, "ICE-TCP connection refused");
            }
            drop(permit);
        });
    }
}

async fn route(
    mut stream: TcpStream,
    remote: SocketAddr,
    hub: &Hub,
    shards: &[ShardLink],
) -> Result<(), &'static str> {
    let first = tokio::time::timeout(FIRST_FRAME_WAIT, read_frame(&mut stream))
        .await
        .map_err(|_| "no check in time")?
        .map_err(|_| "unreadable frame")?
        .ok_or("closed before a check")?;
    let ufrag = stun::local_ufrag(&first).ok_or("first frame is not an ICE check")?;
    let shard = hub
        .shard_for_ufrag(ufrag)
        .ok_or("no session has that ufrag")?;
    let link = shards.get(shard).ok_or("no such shard")?;
    let local = stream.local_addr().map_err(|_| "no local address")?;
    let _ = stream.set_nodelay(true);
    let stream = stream.into_std().map_err(|_| "cannot hand over")?;
    let conn = TcpConn {
        stream,
        remote,
        local,
        first,
    };
    link.tcp.try_send(conn).map_err(|_| "shard busy")
}

/// A shard's ICE-TCP connections, on its own runtime.
pub struct TcpPeers {
    writers: HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>,
    opened: u64,
    events_tx: mpsc::Sender<TcpEvent>,
    pub events: mpsc::Receiver<TcpEvent>,
}

impl Default for TcpPeers {
    fn default() -> Self {
        let (events_tx, events) = mpsc::channel(READ_QUEUE);
        TcpPeers {
            writers: HashMap::new(),
            opened: 0,
            events_tx,
            events,
        }
    }
}

impl TcpPeers {
    /// Takes over `conn`: its frames arrive as [`TcpEvent`]s from now on. Returns its first
    /// frame, for the engine. Must run inside the shard's runtime.
    pub fn open(&mut self, conn: TcpConn) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let TcpConn {
            stream,
            remote,
            local,
            first,
        } = conn;
        if self.writers.len() >= MAX_PER_SHARD && !self.writers.contains_key(&remote) {
            debug!(%remote, "ICE-TCP connection refused: the shard has too many");
            return None;
        }
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                debug!(%remote, error = %e, "ICE-TCP connection lost in hand-over");
                return None;
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        // A reconnect from the same address replaces the old connection's writer.
        self.opened += 1;
        let conn = self.opened;
        self.writers.insert(remote, (conn, tx));
        tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(first) = rx.recv().await {
                out.clear();
                let mut next = Some(first);
                // Everything queued goes out in one write.
                while let Some(data) = next {
                    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    out.extend_from_slice(&data);
                    next = rx.try_recv().ok();
                }
                if wr.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            // Until the end of the stream, a read error or a frame too long.
            while let Ok(Some(data)) = read_frame(&mut rd).await {
                let frame = TcpEvent::Frame {
                    remote,
                    local,
                    data,
                };
                if events.send(frame).await.is_err() {
                    return;
                }
            }
            let _ = events.send(TcpEvent::Closed { remote, conn }).await;
        });
        Some((remote, local, first))
    }

    /// Queues `data` as one frame to the connection from `remote`. False if that connection's
    /// queue is full: the datagram is lost, as on a full UDP socket. Without a connection
    /// there is nowhere to send (str0m checks the client's active candidates too, whose port
    /// is a placeholder), and that is no loss.
    pub fn send(&mut self, remote: SocketAddr, data: Vec<u8>) -> bool {
        let Some((_, tx)) = self.writers.get(&remote) else {
            return true;
        };
        data.len() <= u16::MAX as usize && tx.try_send(data).is_ok()
    }

    /// Connection `conn` from `remote` ended; dropping its queue ends its writer.
    pub fn closed(&mut self, remote: SocketAddr, conn: u64) {
        if self.writers.get(&remote).is_some_and(|(c, _)| *c == conn) {
            self.writers.remove(&remote);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_read_as_rfc_4571_says() {
        let bytes: Vec<u8> = [&[0u8, 3, 1, 2, 3, 0, 0, 0, 1][..], &[9]].concat();
        let mut r = &bytes[..];
        assert_eq!(
            read_frame(&mut r).await.expect("frame"),
            Some(vec![1, 2, 3])
        );
        assert_eq!(read_frame(&mut r).await.expect("empty frame"), Some(vec![]));
        assert_eq!(read_frame(&mut r).await.expect("frame"), Some(vec![9]));
        assert_eq!(read_frame(&mut r).await.expect("end"), None);
        let too_long = (MAX_FRAME as u16 + 1).to_be_bytes();
        assert!(read_frame(&mut &too_long[..]).await.is_err());
        // A frame cut short is an error, not a clean end.
        assert!(read_frame(&mut &[0u8, 4, 1][..]).await.is_err());
    }
}
