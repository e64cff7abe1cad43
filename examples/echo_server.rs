//! The transport's ceiling: `userService.UserService` answered from memory by
//! a bare tonic server (no actors, no storage, no middleware). Every load
//! figure in `BENCHMARKS.md` is also given as a ratio to this server driven
//! by the same load generator on the same machine.
//!
//! ```sh
//! cargo run --release --example echo_server -- --addr 127.0.0.1:5001
//! target/release/examples/loadgen --target http://127.0.0.1:5001 --rpc get-me --sweep
//! ```
//!
//! Register and Login answer too (with a canned user and session id), so the
//! load generator's setup runs unchanged against it.

use std::net::SocketAddr;

use auth_service::grpc::proto::{
    self, FindByEmailRequest, FindByEmailResponse, FindByIdRequest, FindByIdResponse, GetMeRequest,
    GetMeResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, RegisterRequest,
    RegisterResponse,
    user_service_server::{UserService, UserServiceServer},
};
use clap::Parser;
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:5001")]
    addr: SocketAddr,
}

/// A user of the same shape and size as the service returns.
fn canned_user(email: &str) -> proto::User {
    let now = prost_types::Timestamp { seconds: 1_764_000_000, nanos: 123_456_000 };
    proto::User {
        uuid: "0b6f2f56-8f0c-4a8c-9a43-2f1c5e3f9d10".into(),
        first_name: "Load".into(),
        last_name: "Generator".into(),
        password: String::new(),
        email: if email.is_empty() { "load@example.com".into() } else { email.to_owned() },
        role: "user".into(),
        avatar: String::new(),
        created_at: Some(now),
        updated_at: Some(now),
    }
}

struct Echo;

#[tonic::async_trait]
impl UserService for Echo {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        Ok(Response::new(RegisterResponse { user: Some(canned_user(&request.get_ref().email)) }))
    }

    async fn find_by_email(
        &self,
        request: Request<FindByEmailRequest>,
    ) -> Result<Response<FindByEmailResponse>, Status> {
        Ok(Response::new(FindByEmailResponse { user: Some(canned_user(&request.get_ref().email)) }))
    }

    async fn find_by_id(
        &self,
        _request: Request<FindByIdRequest>,
    ) -> Result<Response<FindByIdResponse>, Status> {
        Ok(Response::new(FindByIdResponse { user: Some(canned_user("")) }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        Ok(Response::new(LoginResponse {
            user: Some(canned_user(&request.get_ref().email)),
            session_id: "0".repeat(64),
        }))
    }

    async fn get_me(
        &self,
        _request: Request<GetMeRequest>,
    ) -> Result<Response<GetMeResponse>, Status> {
        Ok(Response::new(GetMeResponse { user: Some(canned_user("")) }))
    }

    async fn logout(
        &self,
        _request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        Ok(Response::new(LogoutResponse {}))
    }

    // Session management is not driven by the load generator: the transport
    // ceiling needs only the RPCs above.
    async fn list_sessions(
        &self,
        _request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        Err(Status::unimplemented("not part of the transport ceiling"))
    }

    async fn revoke_session(
        &self,
        _request: Request<proto::RevokeSessionRequest>,
    ) -> Result<Response<proto::RevokeSessionResponse>, Status> {
        Err(Status::unimplemented("not part of the transport ceiling"))
    }

    async fn logout_all(
        &self,
        _request: Request<proto::LogoutAllRequest>,
    ) -> Result<Response<proto::LogoutAllResponse>, Status> {
        Err(Status::unimplemented("not part of the transport ceiling"))
    }

    async fn change_password(
        &self,
        _request: Request<proto::ChangePasswordRequest>,
    ) -> Result<Response<proto::ChangePasswordResponse>, Status> {
        Err(Status::unimplemented("not part of the transport ceiling"))
    }
}

#[tokio::main]
async fn main() -> Result<(), tonic::transport::Error> {
    let args = Args::parse();
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(Echo))
        .serve(args.addr)
        .await
}
