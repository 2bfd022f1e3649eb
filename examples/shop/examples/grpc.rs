//! gRPC through palisade: a tonic client whose calls go through the client
//! preset (`palisade::preset::ClientLayer`) with the gRPC classifier, to a
//! price server that answers every other call with `UNAVAILABLE`, as an
//! overloaded replica would. Retry hides it: every quote comes back.
//!
//! No `protoc`: the messages derive `prost::Message`, and the client and
//! server call tonic's codegen-free APIs.
//!
//! ```text
//! cargo run -p palisade-shop --example grpc
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::uri::PathAndQuery;
use palisade::BoxError;
use palisade::http::{
    BufferRequestBodyLayer, GrpcClassifier, GrpcReplay, GrpcStatusLayer, ReplayableBody,
};
use palisade::preset::ClientLayer;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::{ServiceBuilder, service_fn};

#[derive(Clone, PartialEq, prost::Message)]
struct QuoteRequest {
    #[prost(string, tag = "1")]
    sku: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Quote {
    #[prost(uint64, tag = "1")]
    cents: u64,
}

const QUOTE: &str = "/shop.Prices/Quote";

/// Serves `shop.Prices/Quote` on `listener`, counting calls in `calls`:
/// every other one fails with `UNAVAILABLE`.
async fn serve(listener: TcpListener, calls: Arc<AtomicU32>) -> Result<(), BoxError> {
    let quote = service_fn(move |request: Request<QuoteRequest>| {
        let busy = calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
        async move {
            if busy {
                return Err(Status::unavailable("busy, try another time"));
            }
            let cents = 100 * request.get_ref().sku.len() as u64;
            Ok(Response::new(Quote { cents }))
        }
    });
    // One method, so every path is Quote.
    let server = service_fn(move |request: http::Request<Body>| {
        let quote = quote.clone();
        let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
        async move { Ok::<_, Infallible>(grpc.unary(quote, request).await) }
    });
    let incoming = TcpIncoming::from(listener);
    Ok(Server::builder()
        .serve_with_incoming(server, incoming)
        .await?)
}

/// What a run saw.
#[derive(Debug)]
struct Run {
    quotes: Vec<u64>,
    server_calls: u32,
    retries: u64,
}

/// Starts the server on a free port and asks it for `requests` quotes.
async fn run(requests: usize) -> Result<Run, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let channel = Endpoint::from_shared(format!("http://{}", listener.local_addr()?))?;
    let server_calls = Arc::new(AtomicU32::new(0));
    tokio::spawn(serve(listener, server_calls.clone()));

    let preset = ClientLayer::builder()
        .name("prices")
        .classifier(GrpcClassifier::new()) // UNAVAILABLE fails and is retried
        .replay(GrpcReplay::all()) // a quote changes nothing: safe to ask twice
        .build()?;
    let handles = preset.handles();
    let stack = ServiceBuilder::new()
        // tonic's request bodies stream: read them into memory, so that
        // a retry can send them again.
        .layer(BufferRequestBodyLayer::new(64 * 1024)?)
        .layer(preset)
        // Below retry and the breaker, so that they see a status sent in
        // trailers too (tonic sends its errors trailers-only, in the
        // headers; a proxy or another server may not).
        .layer(GrpcStatusLayer::default())
        .map_request(|request: http::Request<ReplayableBody<Body>>| request.map(Body::new))
        .service(channel.connect_lazy());
    let mut client = tonic::client::Grpc::new(stack);

    let mut quotes = Vec::new();
    for sku in 0..requests {
        client.ready().await?;
        let request = Request::new(QuoteRequest {
            sku: format!("sku-{sku}"),
        });
        let path = PathAndQuery::from_static(QUOTE);
        let quote: Response<Quote> = client.unary(request, path, ProstCodec::default()).await?;
        quotes.push(quote.into_inner().cents);
    }
    Ok(Run {
        quotes,
        server_calls: server_calls.load(Ordering::SeqCst),
        retries: handles.retry.counts().retries,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let run = run(5).await?;
    println!(
        "{} quotes {:?}: the server was called {} times, {} of them retries",
        run.quotes.len(),
        run.quotes,
        run.server_calls,
        run.retries
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::run;

    #[tokio::test(start_paused = true)]
    async fn every_quote_comes_back_through_the_retries() {
        let run = run(4).await.unwrap();
        assert_eq!(run.quotes, [500, 500, 500, 500], "\"sku-N\" costs 5 × 100");
        assert_eq!(run.server_calls, 8, "each request was UNAVAILABLE once");
        assert_eq!(run.retries, 4);
    }
}
