//! System proxy settings are ignored: the fetcher only ever talks to the configured gateways.
//! (Own test binary: it sets process-wide proxy variables.)

use axum::routing::get;
use axum::Router;
use cid::Version;
use ipfs_mount_fetch::{Fetcher, GatewayConfig, GatewayFetcher};
use ipfs_mount_ipld::cids::compute;

#[tokio::test]
async fn proxy_environment_is_ignored() {
    // A "proxy" that answers every request with a 502; if it were used the fetch would fail.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let h = hits.clone();
    let proxy_app = Router::new().fallback(move || {
        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { axum::http::StatusCode::BAD_GATEWAY }
    });
    tokio::spawn(async move { axum::serve(proxy, proxy_app).await.unwrap() });
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, format!("http://{proxy_addr}"));
    }
    for var in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(var);
    }

    let data = b"direct".to_vec();
    let cid = compute(Version::V1, 0x55, 0x12, &data).unwrap();
    let body = data.clone();
    let gw = Router::new().route("/ipfs/{cid}", get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, gw).await.unwrap() });

    let mut cfg = GatewayConfig::new(vec![format!("http://{addr}/").parse().unwrap()]);
    cfg.retries = 0;
    let f = GatewayFetcher::new(cfg).unwrap();
    assert_eq!(&f.fetch_block(&cid).await.unwrap().data()[..], &data[..]);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
