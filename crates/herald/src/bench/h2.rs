//! Subscriptions over HTTP/2 for `herald bench idle|fanout --h2-streams N`: a few TLS
//! connections (ALPN `h2`), each carrying N subscription streams, as a browser page's
//! `EventSource`s share one connection.

use super::conn::Subscription;
use super::swarm::Swarm;
use super::target::Target;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Opens `total` streams over connections of `per_connection` streams each.
pub async fn open(target: &Target, total: usize, per_connection: usize) -> anyhow::Result<Swarm> {
    let Some(config) = &target.tls else {
        anyhow::bail!("--h2-streams needs an https:// --url (HTTP/2 is negotiated by ALPN)");
    };
    let mut config = (**config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let started = Instant::now();
    let mut swarm = Swarm {
        open: Vec::with_capacity(total),
        indexes: Vec::new(),
        failures: BTreeMap::new(),
        took: std::time::Duration::ZERO,
        connections: Vec::new(),
    };
    let uri = format!("https://{}{}", target.host(), target.subscribe_path());
    let mut left = total;
    while left > 0 {
        let count = left.min(per_connection.max(1));
        left -= count;
        let tcp = match tokio::net::TcpStream::connect(target.addr).await {
            Ok(tcp) => tcp,
            Err(err) => {
                *swarm.failures.entry(format!("connect: {err}")).or_insert(0) += count;
                continue;
            }
        };
        let tls = match connector.connect(target.server_name(), tcp).await {
            Ok(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => tls,
            Ok(_) => anyhow::bail!("the server did not agree to HTTP/2 (ALPN)"),
            Err(err) => {
                *swarm.failures.entry(format!("TLS: {err}")).or_insert(0) += count;
                continue;
            }
        };
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await?;
        swarm.connections.push(tokio::spawn(async move {
            let _ = connection.await;
        }));
        for _ in 0..count {
            let mut request = http::Request::get(&uri).header("accept", "text/event-stream");
            if let Some(auth) = target.subscriber_authorization() {
                request = request.header("authorization", auth);
            }
            let request = request.body(Empty::<Bytes>::new())?;
            let mut sender = sender.clone();
            let response = match sender.ready().await {
                Ok(()) => sender.send_request(request).await,
                Err(err) => Err(err),
            };
            match response {
                Ok(response) if response.status() == 200 => {
                    swarm.open.push(Subscription::http2(response.into_body()));
                }
                Ok(response) => {
                    *swarm
                        .failures
                        .entry(format!("HTTP {}", response.status().as_u16()))
                        .or_insert(0) += 1;
                }
                Err(err) => *swarm.failures.entry(err.to_string()).or_insert(0) += 1,
            }
        }
    }
    swarm.took = started.elapsed();
    Ok(swarm)
}
