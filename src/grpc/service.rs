//! `userService.UserService`: each RPC parses its request into domain
//! types, calls its use case, and translates the answer (or the error, via
//! [`to_status`]) back to protobuf.

use std::sync::Arc;

use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use super::{
    SESSION_METADATA_KEY,
    proto::{self, user_service_server::UserService},
    status::to_status,
};
use crate::{
    actors::session_store::SessionOrigin,
    domain::{Email, Password, PeerIdentity, Registration, SessionId, User, UserId},
    error::AuthError,
    net::{self, Cidr},
    service::{AuthService, Caller},
};

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

/// `userService.UserService` backed by [`AuthService`].
#[derive(Clone)]
pub struct UserServiceImpl {
    auth: AuthService,
    /// `net.trusted_proxies`: peers whose `x-forwarded-for` names the client.
    trusted_proxies: Arc<[Cidr]>,
}

impl UserServiceImpl {
    pub fn new(auth: AuthService, trusted_proxies: Vec<Cidr>) -> Self {
        Self { auth, trusted_proxies: trusted_proxies.into() }
    }

    /// Where a call comes from: the client's address (see
    /// [`net::client_address`]) and its `user-agent`.
    fn origin<T>(&self, request: &Request<T>) -> SessionOrigin {
        let metadata = request.metadata();
        let header = |name| metadata.get(name).and_then(|v| v.to_str().ok());
        let client_address = request
            .remote_addr()
            .map(|peer| {
                net::client_address(peer.ip(), header("x-forwarded-for"), &self.trusted_proxies)
                    .to_string()
            })
            .unwrap_or_default();
        let user_agent = header("user-agent")
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect())
            .unwrap_or_default();
        SessionOrigin { client_address, user_agent }
    }
}

/// The `session_id` metadata value, parsed; absent, empty, non-ASCII or
/// malformed count as none (no such session can exist).
fn session_id<T>(request: &Request<T>) -> Option<SessionId> {
    request
        .metadata()
        .get(SESSION_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| SessionId::parse(v.trim()))
}

/// The session an RPC needs; UNAUTHENTICATED without one.
pub(super) fn required_session<T>(request: &Request<T>) -> Result<SessionId, Status> {
    session_id(request).ok_or_else(|| to_status(AuthError::Unauthenticated))
}

/// Who calls: the session named, if any, and the identity of the verified
/// client certificate, if any (the RPC layer put it in the extensions).
pub(super) fn caller<T>(request: &Request<T>) -> Caller {
    let peer = request.extensions().get::<PeerIdentity>().cloned();
    Caller { session: session_id(request), peer, operator: false }
}

/// An input rule broken, as the status that names its field.
pub(super) fn invalid(error: crate::domain::InvalidInput) -> Status {
    to_status(error.into())
}

pub(super) fn timestamp(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// The wire form of a user; `password` stays empty by construction.
impl From<User> for proto::User {
    fn from(user: User) -> Self {
        to_proto(user)
    }
}

fn to_proto(user: User) -> proto::User {
    proto::User {
        uuid: user.id.to_string(),
        first_name: user.first_name,
        last_name: user.last_name,
        password: String::new(),
        email: user.email,
        role: user.role.as_str().to_owned(),
        avatar: user.avatar.unwrap_or_default(),
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
    }
}

#[tonic::async_trait]
impl UserService for UserServiceImpl {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        let registration = Registration::parse(
            &r.email,
            &r.first_name,
            &r.last_name,
            r.password,
            &r.role,
            &r.avatar,
        )
        .map_err(invalid)?;
        let user = self.auth.register(registration, &caller).await.map_err(to_status)?;
        Ok(Response::new(proto::RegisterResponse { user: Some(to_proto(user)) }))
    }

    async fn find_by_email(
        &self,
        request: Request<proto::FindByEmailRequest>,
    ) -> Result<Response<proto::FindByEmailResponse>, Status> {
        let email = Email::parse(&request.get_ref().email, "email");
        let user = self.auth.find_by_email(&caller(&request), email).await.map_err(to_status)?;
        Ok(Response::new(proto::FindByEmailResponse { user: Some(to_proto(user)) }))
    }

    async fn find_by_id(
        &self,
        request: Request<proto::FindByIdRequest>,
    ) -> Result<Response<proto::FindByIdResponse>, Status> {
        let id = UserId::parse(&request.get_ref().uuid);
        let user = self.auth.find_by_id(&caller(&request), id).await.map_err(to_status)?;
        Ok(Response::new(proto::FindByIdResponse { user: Some(to_proto(user)) }))
    }

    async fn login(
        &self,
        request: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::LoginResponse>, Status> {
        let origin = self.origin(&request);
        let r = request.into_inner();
        let email = Email::parse(&r.email, "email").map_err(invalid)?;
        let password = Password::parse_existing(r.password).map_err(invalid)?;
        let (user, session) = self.auth.login(email, password, origin).await.map_err(to_status)?;
        Ok(Response::new(proto::LoginResponse {
            user: Some(to_proto(user)),
            session_id: session.expose().to_owned(),
        }))
    }

    async fn get_me(
        &self,
        request: Request<proto::GetMeRequest>,
    ) -> Result<Response<proto::GetMeResponse>, Status> {
        let session = required_session(&request)?;
        let user = self.auth.get_me(&session).await.map_err(to_status)?;
        Ok(Response::new(proto::GetMeResponse { user: Some(to_proto(user)) }))
    }

    async fn logout(
        &self,
        request: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        self.auth.logout(required_session(&request)?).await.map_err(to_status)?;
        Ok(Response::new(proto::LogoutResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        let session = required_session(&request)?;
        let (sessions, current) = self.auth.list_sessions(&session).await.map_err(to_status)?;
        let sessions = sessions
            .into_iter()
            .map(|s| proto::SessionInfo {
                current: s.handle == current,
                handle: s.handle,
                created_at: Some(unix_timestamp(s.created)),
                last_seen_at: Some(unix_timestamp(s.last_seen)),
                client_address: s.origin.client_address,
                user_agent: s.origin.user_agent,
            })
            .collect();
        Ok(Response::new(proto::ListSessionsResponse { sessions }))
    }

    async fn revoke_session(
        &self,
        request: Request<proto::RevokeSessionRequest>,
    ) -> Result<Response<proto::RevokeSessionResponse>, Status> {
        let session = required_session(&request)?;
        let handle = &request.get_ref().handle;
        self.auth.revoke_session(&session, handle).await.map_err(to_status)?;
        Ok(Response::new(proto::RevokeSessionResponse {}))
    }

    async fn logout_all(
        &self,
        request: Request<proto::LogoutAllRequest>,
    ) -> Result<Response<proto::LogoutAllResponse>, Status> {
        let session = required_session(&request)?;
        let keep = request.get_ref().keep_current;
        let ended = self.auth.logout_all(session, keep).await.map_err(to_status)?;
        Ok(Response::new(proto::LogoutAllResponse { ended }))
    }

    async fn change_password(
        &self,
        request: Request<proto::ChangePasswordRequest>,
    ) -> Result<Response<proto::ChangePasswordResponse>, Status> {
        let session = required_session(&request)?;
        let address = self.origin(&request).client_address;
        let r = request.into_inner();
        let old = Password::parse_existing(r.old_password).map_err(invalid)?;
        let new = Password::parse_new(r.new_password).map_err(invalid)?;
        let ended =
            self.auth.change_password(session, &address, old, new).await.map_err(to_status)?;
        Ok(Response::new(proto::ChangePasswordResponse { ended }))
    }
}

fn unix_timestamp(secs: u64) -> Timestamp {
    Timestamp { seconds: i64::try_from(secs).unwrap_or(i64::MAX), nanos: 0 }
}
