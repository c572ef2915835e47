//! A JSON CRUD service over a store behind a blocking call (as a database client would be),
//! with the router, the `json` feature and the library's blocking pool. The same service in
//! axum 0.8 is `benches/peers/axum/src/bin/crud.rs` (`bash benches/services.sh` compares them).
//!
//! ```text
//! cargo run --features json --example crud [-- ADDR]          # default 127.0.0.1:8080
//! curl -d '{"name":"Ada","email":"ada@example.com"}' -H 'Content-Type: application/json' localhost:8080/users
//! curl localhost:8080/users/1
//! curl -X DELETE localhost:8080/users/1
//! curl localhost:8080/hello/world                                # {"hello":"world"}, no blocking
//! ```
//!
//! A body that is not JSON gets 400 saying where, a `Content-Type` other than JSON 415, an id
//! that is not a number or not there 404; SIGTERM drains (work queued and running is answered).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use quiesce::{Response, Router, Server, ServerConfig};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct NewUser {
    name: String,
    email: String,
}

#[derive(Serialize, Clone)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// The store: a blocking one, as a database client would be.
#[derive(Default)]
struct Store {
    users: Mutex<(u64, HashMap<u64, User>)>,
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let config = ServerConfig { addr: addr.parse().expect("an address like 127.0.0.1:8080"), ..Default::default() };
    let store = Arc::new(Store::default());
    let (created, read, deleted) = (store.clone(), store.clone(), store);
    let router = Router::new()
        .get("/hello/{name}", |req, res| {
            res.json(&serde_json::json!({ "hello": req.param("name") }));
        })
        .post("/users", move |req, res| {
            let (new, store): (NewUser, _) = (req.json()?, created.clone());
            Ok(res.blocking(req, move |_| {
                let mut users = store.users.lock().unwrap();
                users.0 += 1;
                let user = User { id: users.0, name: new.name, email: new.email };
                users.1.insert(user.id, user.clone());
                Response::new().set_status(201).json(&user).take()
            }))
        })
        .get("/users/{id}", move |req, res| {
            let (store, id) = (read.clone(), req.param("id").and_then(|id| id.parse::<u64>().ok()));
            res.blocking(req, move |_| match id.and_then(|id| store.users.lock().unwrap().1.get(&id).cloned()) {
                Some(user) => Response::new().json(&user).take(),
                None => Response::new().set_status(404).take(),
            })
        })
        .delete("/users/{id}", move |req, res| {
            let (store, id) = (deleted.clone(), req.param("id").and_then(|id| id.parse::<u64>().ok()));
            res.blocking(req, move |_| {
                let removed = id.and_then(|id| store.users.lock().unwrap().1.remove(&id));
                Response::new().set_status(if removed.is_some() { 204 } else { 404 }).take()
            })
        });
    let server = Server::bind(config, router).expect("bind");
    eprintln!("listening on http://{}", server.local_addr());
    std::process::exit(server.run().expect("event loop").exit_code());
}
