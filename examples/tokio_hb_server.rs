//! The peer for heartbeat load: a tokio `current_thread` server doing the same job as a
//! liveline server for `hb_load`: answer HELLO with WELCOME, PING with PONG, and drop a
//! connection that has read nothing for the idle timeout. Written as a tokio user would:
//! a task per connection, a `timeout` around each read (an eager timer reset per read).
//!
//! ```text
//! cargo run --release --example tokio_hb_server -- 127.0.0.1:9100
//! ```

use bytes::BytesMut;
use liveline::codec::{Decoder, Encoder};
use liveline::frame::{Frame, Welcome, PROTOCOL_VERSION};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const IDLE: Duration = Duration::from_secs(30);

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        let mut session = 0u64;
        loop {
            let (mut socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            session += 1;
            tokio::spawn(async move {
                let mut dec = Decoder::default();
                let enc = Encoder::default();
                let mut inbuf = BytesMut::with_capacity(4096);
                let mut out = BytesMut::new();
                loop {
                    match tokio::time::timeout(IDLE, socket.read_buf(&mut inbuf)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return, // idle, EOF or error
                    }
                    loop {
                        match dec.decode(&mut inbuf) {
                            Ok(Some(Frame::Hello(_))) => {
                                let w = Frame::Welcome(Welcome {
                                    version: PROTOCOL_VERSION,
                                    session,
                                    ping_interval_ms: 10_000,
                                    idle_timeout_ms: IDLE.as_millis() as u32,
                                    max_frame_len: dec.max_frame_len(),
                                });
                                let _ = enc.encode(&w, &mut out);
                            }
                            Ok(Some(Frame::Ping(v))) => {
                                let _ = enc.encode(&Frame::Pong(v), &mut out);
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                    if !out.is_empty() {
                        if socket.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
            });
        }
    })
}
