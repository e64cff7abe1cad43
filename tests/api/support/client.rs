//! Typed helpers for the gRPC API and plain HTTP for the ops port; and a
//! client's retry, as gRPC's retry policy would do it.

use std::{net::SocketAddr, time::Duration};

use auth_service::grpc::proto::{
    GetMeRequest, LoginRequest, RegisterRequest, User, user_service_client::UserServiceClient,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

pub type Client = UserServiceClient<Channel>;

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[]).await
}

/// A plain HTTP/1.1 GET with extra headers: (status, body).
pub async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to ops port");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

// ---- typed client helpers ----

pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

pub fn registration(email: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.to_owned(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        password: password.to_owned(),
        role: String::new(),
        avatar: String::new(),
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// Registers a fresh user; returns it.
pub async fn register(client: &mut Client, email: &str, password: &str) -> User {
    client
        .register(registration(email, password))
        .await
        .unwrap_or_else(|s| panic!("register {email}: {s:?}"))
        .into_inner()
        .user
        .expect("user in response")
}

/// A LoginRequest.
pub fn credentials(email: &str, password: &str) -> LoginRequest {
    LoginRequest { email: email.to_owned(), password: password.to_owned() }
}

/// Logs in; returns (user, session id).
pub async fn login(client: &mut Client, email: &str, password: &str) -> (User, String) {
    let response = client
        .login(LoginRequest { email: email.to_owned(), password: password.to_owned() })
        .await
        .unwrap_or_else(|s| panic!("login {email}: {s:?}"))
        .into_inner();
    (response.user.expect("user"), response.session_id)
}

/// Registers and logs in a fresh user; returns (user, session id).
pub async fn signed_in(client: &mut Client) -> (User, String) {
    let email = unique_email();
    register(client, &email, PASSWORD).await;
    login(client, &email, PASSWORD).await
}

/// GetMe with `session`; returns the user.
pub async fn get_me(client: &mut Client, session: &str) -> User {
    client
        .get_me(with_session(GetMeRequest {}, session))
        .await
        .unwrap_or_else(|s| panic!("get me: {s:?}"))
        .into_inner()
        .user
        .expect("user in response")
}

/// A request carrying `session_id` metadata.
pub fn with_session<T>(message: T, session: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("session_id", MetadataValue::try_from(session).expect("ascii session id"));
    request
}

/// The call as a gRPC client with a retry policy makes it: retried on
/// UNAVAILABLE after a short pause (the service's UNAVAILABLE carries a
/// retry-after), and retried transparently when it never left the client.
pub async fn retrying<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Err(status)
                if (status.code() == tonic::Code::Unavailable || never_sent(&status))
                    && attempts < 60 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
}

/// A call the server never processed, which gRPC's transparent retry
/// (grpc-go, grpc-java) sends again: hyper never wrote it because its
/// connection closed first (tonic answers CANCELLED), or it was opened past
/// the last stream a gracefully stopping server's GOAWAY (NO_ERROR) said it
/// would process (tonic answers INTERNAL).
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return true;
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = error.source();
    }
    false
}
