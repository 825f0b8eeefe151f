//! The peer for heartbeat load: a tokio `current_thread` server doing the same job as a
//! liveline server for `hb_load`: answer HELLO with WELCOME, PING with PONG, and drop a
//! connection that has read nothing for the idle timeout. Written as a tokio user would:
//! a task per connection, a `timeout` around each read (an eager timer reset per read).
//!
//! ```text
//! cargo run --release --example tokio_hb_server -- 127.0.0.1:9100
//! ```
//!
//! With `HB_TLS_CERT` and `HB_TLS_KEY` (PEM files) in the environment, over TLS
//! (tokio-rustls).

use bytes::BytesMut;
use liveline::codec::{Decoder, Encoder};
use liveline::frame::{Frame, Welcome, PROTOCOL_VERSION};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const IDLE: Duration = Duration::from_secs(30);

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".to_string());
    // With HB_TLS_CERT and HB_TLS_KEY, TLS through tokio-rustls, with the same rustls
    // settings as liveline's (X25519 first, tickets).
    let tls = match (std::env::var("HB_TLS_CERT"), std::env::var("HB_TLS_KEY")) {
        (Ok(cert), Ok(key)) => Some(tokio_rustls::TlsAcceptor::from(
            liveline::tls::server_config(&std::fs::read(cert)?, &std::fs::read(key)?)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        )),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        let mut session = 0u64;
        loop {
            let (socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            session += 1;
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(socket).await {
                            serve(stream, session).await;
                        }
                    }
                    None => serve(socket, session).await,
                }
            });
        }
    })
}

/// One session: WELCOME for HELLO, PONG for PING, closed after the idle timeout.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S, session: u64) {
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
            let _ = socket.flush().await;
            out.clear();
        }
    }
}
