//! A JSON CRUD service over a store behind a blocking call, in axum 0.8: the peer of
//! quiesce's examples/crud.rs (same routes, same answers). Usage: crud [ADDR]
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
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

type Shared = State<Arc<Store>>;

async fn hello(Path(name): Path<String>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "hello": name }))
}

async fn create(State(store): Shared, Json(new): Json<NewUser>) -> impl IntoResponse {
    let user = tokio::task::spawn_blocking(move || {
        let mut users = store.users.lock().unwrap();
        users.0 += 1;
        let user = User { id: users.0, name: new.name, email: new.email };
        users.1.insert(user.id, user.clone());
        user
    })
    .await
    .unwrap();
    (StatusCode::CREATED, Json(user))
}

async fn read(State(store): Shared, Path(id): Path<u64>) -> Result<Json<User>, StatusCode> {
    let found = tokio::task::spawn_blocking(move || store.users.lock().unwrap().1.get(&id).cloned()).await.unwrap();
    found.map(Json).ok_or(StatusCode::NOT_FOUND)
}

async fn delete(State(store): Shared, Path(id): Path<u64>) -> StatusCode {
    let removed = tokio::task::spawn_blocking(move || store.users.lock().unwrap().1.remove(&id)).await.unwrap();
    if removed.is_some() { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let app = Router::new()
        .route("/hello/{name}", get(hello))
        .route("/users", post(create))
        .route("/users/{id}", get(read).delete(delete))
        .with_state(Arc::new(Store::default()));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await.unwrap();
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
}
