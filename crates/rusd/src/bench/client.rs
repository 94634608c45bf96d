//! Connections: one tonic channel (one HTTP/2 connection) per `--conns`, endpoints assigned
//! round-robin, and the generated etcd clients over them.

use std::time::Duration;

use anyhow::{bail, Context};
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::lease_client::LeaseClient;
use rusd_proto::etcdserverpb::watch_client::WatchClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use super::Global;

/// Largest response accepted (big lists).
const MAX_MESSAGE: usize = 1 << 30;

/// `host:port` or `http://host:port` as an `http://` URL; TLS is not supported.
pub fn endpoint_url(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("https://") || e.starts_with("unixs://") {
        bail!("endpoint {e}: TLS is not supported by rusd bench");
    }
    if e.is_empty() {
        bail!("empty endpoint");
    }
    Ok(if e.starts_with("http://") {
        e.to_owned()
    } else {
        format!("http://{e}")
    })
}

/// Adds the `--user` token to every request's metadata.
#[derive(Clone, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            r.metadata_mut().insert("token", token.clone());
        }
        Ok(r)
    }
}

/// A connection with the run's token.
pub type Ch = InterceptedService<Channel, Token>;

/// The run's gRPC connections.
pub struct Conns {
    channels: Vec<Channel>,
    token: Token,
}

impl Conns {
    /// Opens `--conns` connections, connection `i` to endpoint `i % endpoints.len()`, and
    /// authenticates as `--user` (one token serves every connection: etcd's simple tokens are
    /// valid on every member).
    pub async fn connect(g: &Global) -> anyhow::Result<Conns> {
        let mut conns = Self::open(&g.endpoints, g.conns).await?;
        if let Some((name, password)) = &g.user {
            let mut auth =
                rusd_proto::etcdserverpb::auth_client::AuthClient::new(conns.channels[0].clone());
            let token = auth
                .authenticate(rusd_proto::etcdserverpb::AuthenticateRequest {
                    name: name.clone(),
                    password: password.clone(),
                })
                .await
                .with_context(|| format!("authenticating as {name}"))?
                .into_inner()
                .token;
            conns.token = Token(Some(token.parse().context("the token is not ASCII")?));
        }
        Ok(conns)
    }

    /// Opens `n` connections, connection `i` to endpoint `i % endpoints.len()`.
    async fn open(endpoints: &[String], n: usize) -> anyhow::Result<Conns> {
        let mut channels = Vec::with_capacity(n);
        for i in 0..n {
            let url = &endpoints[i % endpoints.len()];
            let channel = Endpoint::from_shared(url.clone())
                .with_context(|| format!("endpoint {url}"))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .http2_adaptive_window(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?;
            channels.push(channel);
        }
        Ok(Conns {
            channels,
            token: Token::default(),
        })
    }

    /// The connection of client (or stream) `i`, round-robin, with the run's token.
    pub fn channel(&self, i: usize) -> Ch {
        InterceptedService::new(
            self.channels[i % self.channels.len()].clone(),
            self.token.clone(),
        )
    }

    /// A KV client on connection `i % conns`.
    pub fn kv(&self, i: usize) -> KvClient<Ch> {
        KvClient::new(self.channel(i)).max_decoding_message_size(MAX_MESSAGE)
    }

    /// A Watch client on connection `i % conns`.
    pub fn watch(&self, i: usize) -> WatchClient<Ch> {
        WatchClient::new(self.channel(i)).max_decoding_message_size(MAX_MESSAGE)
    }

    /// A Lease client on connection `i % conns`.
    pub fn lease(&self, i: usize) -> LeaseClient<Ch> {
        LeaseClient::new(self.channel(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_or_without_scheme() {
        assert_eq!(
            endpoint_url("127.0.0.1:2379").ok().as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            endpoint_url(" http://h:1/ ").ok().as_deref(),
            Some("http://h:1")
        );
        assert!(endpoint_url("https://h:1").is_err());
    }
}
