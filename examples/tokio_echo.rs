//! The peer for `echo`: tokio's echo server on a `current_thread` runtime (one thread, like
//! liveline's loop), written the way tokio's own example is.
//!
//! ```text
//! cargo run --release --example tokio_echo -- 127.0.0.1:7001 [WORKERS]
//! ```
//!
//! With `WORKERS`, a `multi_thread` runtime of that many workers instead: the peer of
//! `echo ADDR THREADS` (loops per core).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_string());
    let workers: Option<usize> = std::env::args().nth(2).and_then(|w| w.parse().ok());
    let rt = match workers {
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_io()
            .build()?,
        None => tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?,
    };
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (mut socket, _) = listener.accept().await?;
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if socket.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}
