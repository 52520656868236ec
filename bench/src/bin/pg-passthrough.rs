//! `make bench`'s `pingora` leg: the proxy stack the guard is built on (pingora, the same
//! version, worker threads and allocator), forwarding every request to the stub and doing
//! nothing else. It is the ceiling of the guard's throughput on the chosen stack: the guard does
//! this work plus authentication, classification, the decision and the settlement.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// The stub's address.
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads (the guard's `proxy.threads`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream: args.upstream,
        },
    );
    svc.add_tcp(&args.listen);
    server.add_service(svc);
    server.run_forever();
}
