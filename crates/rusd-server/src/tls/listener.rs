//! Accepting connections for [`crate::http_serve`]: plain TCP, TLS, or both on one port; or
//! plaintext on a Unix socket (`unix://` URLs).
//!
//! TLS handshakes run in their own tasks (a slow or silent client must not hold up the accept
//! loop) and finished connections are handed to axum through a channel. On a port that serves
//! both, the first byte tells them apart: a TLS connection opens with a handshake record (0x16),
//! which neither HTTP/1.1 nor the HTTP/2 preface can start with.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A TLS record carrying a handshake message: the first byte of every TLS connection.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a client may take to send its first byte and finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken but not yet taken by axum.
const BACKLOG: usize = 128;

/// An accepted connection.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Plaintext on a Unix socket.
    Unix(UnixStream),
}

impl Conn {
    /// The certificate chain the client presented, on a TLS connection.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Conn::Plain(_) | Conn::Unix(_) => None,
            Conn::Tls(s) => s.get_ref().1.peer_certificates(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What one listening address serves.
#[derive(Clone)]
pub struct Accept {
    /// Plain connections (`http://`).
    pub plain: bool,
    /// TLS connections (`https://`).
    pub tls: Option<TlsAcceptor>,
}

impl Accept {
    /// Words for logs.
    pub fn describe(&self) -> &'static str {
        match (self.plain, self.tls.is_some()) {
            (true, true) => "TLS and plaintext",
            (false, true) => "TLS",
            _ => "plaintext",
        }
    }
}

/// The addresses to listen on, each once, with what it serves: `plain` ones from `http://`
/// URLs, `tls` ones from `https://` URLs (with `acceptor`); an address in both serves both.
pub fn addresses(
    plain: &[SocketAddr],
    tls: &[SocketAddr],
    acceptor: Option<&TlsAcceptor>,
) -> Vec<(SocketAddr, Accept)> {
    let mut out: Vec<(SocketAddr, Accept)> = Vec::new();
    for (addr, is_tls) in plain
        .iter()
        .map(|a| (a, false))
        .chain(tls.iter().map(|a| (a, true)))
    {
        let index = match out.iter().position(|(a, _)| a == addr) {
            Some(i) => i,
            None => {
                out.push((
                    *addr,
                    Accept {
                        plain: false,
                        tls: None,
                    },
                ));
                out.len() - 1
            }
        };
        let accept = &mut out[index].1;
        if is_tls {
            accept.tls = acceptor.cloned();
        } else {
            accept.plain = true;
        }
    }
    out
}

/// A listener that hands out plain or TLS connections (TCP_NODELAY set), or Unix socket ones.
pub struct Listener {
    rx: mpsc::Receiver<Conn>,
    /// The TCP address bound; `None` on a Unix socket.
    local: Option<SocketAddr>,
    /// The Unix socket's file, removed when the listener goes (as etcd's listener does).
    unix_path: Option<PathBuf>,
    accept_loop: JoinHandle<()>,
}

impl Listener {
    /// Starts accepting on `tcp`; `what` ("client", "peer") names it in logs.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn new(tcp: TcpListener, accept: Accept, what: &'static str) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(BACKLOG);
        let accept_loop = tokio::spawn(accept_loop(tcp, accept, tx, what));
        Ok(Self {
            rx,
            local: Some(local),
            unix_path: None,
            accept_loop,
        })
    }

    /// Binds a Unix socket at `path` and starts accepting on it (plaintext). A file left at
    /// `path` by an earlier run is removed first, as etcd does.
    ///
    /// # Errors
    /// The old file cannot be removed, or the socket cannot be bound.
    pub fn unix(path: &Path, what: &'static str) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let unix = UnixListener::bind(path)?;
        let (tx, rx) = mpsc::channel(BACKLOG);
        let accept_loop = tokio::spawn(async move {
            loop {
                match unix.accept().await {
                    Ok((stream, _)) => {
                        if tx.send(Conn::Unix(stream)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        tracing::error!(error = %e, listener = what, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            rx,
            local: None,
            unix_path: Some(path.to_path_buf()),
            accept_loop,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Closes the socket: the server stopped serving.
        self.accept_loop.abort();
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Listener {
    /// The next connection.
    pub async fn accept(&mut self) -> Conn {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (it only does when we are dropped): nothing more comes.
            None => std::future::pending().await,
        }
    }

    /// The TCP address the listener is bound to (`None` for a Unix socket).
    #[must_use]
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }
}

async fn accept_loop(tcp: TcpListener, accept: Accept, tx: mpsc::Sender<Conn>, what: &'static str) {
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::error!(error = %e, listener = what, "accepting a connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Without TCP_NODELAY a small response waits for the peer's delayed ACK (Nagle):
        // ~40 ms per request on one connection.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        match &accept.tls {
            None => {
                if tx.send(Conn::Plain(stream)).await.is_err() {
                    return;
                }
            }
            Some(tls) => {
                let (tls, plain, tx) = (tls.clone(), accept.plain, tx.clone());
                tokio::spawn(async move {
                    if let Some(conn) = handshake(stream, remote, tls, plain, what).await {
                        let _ = tx.send(conn).await;
                    }
                });
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Finishes the TLS handshake, or passes a plaintext connection on a port that takes both.
async fn handshake(
    stream: TcpStream,
    remote: SocketAddr,
    tls: TlsAcceptor,
    plain_too: bool,
    what: &'static str,
) -> Option<Conn> {
    if plain_too {
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => return Some(Conn::Plain(stream)),
            Ok(Ok(1)) => {}
            // Closed, failed, or silent for too long.
            _ => return None,
        }
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(conn)) => Some(Conn::Tls(Box::new(conn))),
        Ok(Err(e)) => {
            tracing::warn!(remote = %remote, listener = what, error = %e, "rejected a TLS connection");
            None
        }
        Err(_) => {
            tracing::warn!(remote = %remote, listener = what, "TLS handshake timed out");
            None
        }
    }
}
