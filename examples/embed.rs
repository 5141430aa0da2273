//! Mount tusk's upload routes inside a larger warp application.
//!
//! Run: `cargo run --example embed` then `curl -X OPTIONS -i http://127.0.0.1:1081/files/`
//! and `curl http://127.0.0.1:1081/hello`.
#![deny(warnings)]

use std::net::SocketAddr;

use tusk::config::{Overrides, Settings};
use tusk::{routes, AppState};
use warp::Filter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let overrides = Overrides {
        data_dir: Some(std::env::temp_dir().join("tusk-embed-example")),
        ..Overrides::default()
    };
    let settings = Settings::load(None, std::env::vars(), &overrides)?;
    let state = AppState::open(settings).await?;

    // Your own routes first; everything else goes to tusk (which answers 404 for other paths).
    let hello = warp::path("hello").map(|| "hello from the host application\n");
    let app = hello
        .map(warp::reply::Reply::into_response)
        .or(routes::routes(state))
        .unify();

    let address: SocketAddr = ([127, 0, 0, 1], 1081).into();
    println!("listening on http://{address}/ (uploads at /files/)");
    // warp::serve is enough when you don't need checksum trailers or tusk's graceful shutdown;
    // tusk::server::run gives you both.
    warp::serve(app).bind(address).await.run().await;
    Ok(())
}
