//! `userService.AdminService`: operators' actions on accounts, for an
//! admin's session or an allowed peer (the use cases decide who may).

use tonic::{Request, Response, Status};

use super::{
    proto::{self, admin_service_server::AdminService},
    service::{caller, invalid},
    status::to_status,
};
use crate::{
    domain::Email,
    service::{AccountAction, AuthService},
};

/// `userService.AdminService` backed by [`AuthService`].
#[derive(Clone)]
pub struct AdminServiceImpl {
    auth: AuthService,
}

impl AdminServiceImpl {
    pub fn new(auth: AuthService) -> Self {
        Self { auth }
    }

    async fn act(
        &self,
        request: Request<proto::AdminUserRequest>,
        action: AccountAction,
    ) -> Result<Response<proto::AdminUserResponse>, Status> {
        let caller = caller(&request);
        let email = Email::parse(&request.get_ref().email, "email").map_err(invalid)?;
        let (user, ended) =
            self.auth.administer(&caller, email, action).await.map_err(to_status)?;
        Ok(Response::new(proto::AdminUserResponse {
            uuid: user.id.to_string(),
            sessions_ended: ended,
        }))
    }
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn revoke_user_sessions(
        &self,
        request: Request<proto::AdminUserRequest>,
    ) -> Result<Response<proto::AdminUserResponse>, Status> {
        self.act(request, AccountAction::RevokeSessions).await
    }

    async fn disable_user(
        &self,
        request: Request<proto::AdminUserRequest>,
    ) -> Result<Response<proto::AdminUserResponse>, Status> {
        self.act(request, AccountAction::Disable).await
    }

    async fn enable_user(
        &self,
        request: Request<proto::AdminUserRequest>,
    ) -> Result<Response<proto::AdminUserResponse>, Status> {
        self.act(request, AccountAction::Enable).await
    }

    async fn reset_second_factor(
        &self,
        request: Request<proto::AdminUserRequest>,
    ) -> Result<Response<proto::AdminUserResponse>, Status> {
        let caller = caller(&request);
        let email = Email::parse(&request.get_ref().email, "email").map_err(invalid)?;
        let user = self.auth.reset_second_factor(&caller, email).await.map_err(to_status)?;
        Ok(Response::new(proto::AdminUserResponse { uuid: user.id.to_string(), sessions_ended: 0 }))
    }
}
