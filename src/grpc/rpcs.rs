//! The RPCs the server knows by name. Metric labels and span names come
//! only from this list, so a scanner probing other paths cannot mint new
//! time series.

/// The RPCs this server serves, with their go-grpc-prometheus type. Metric
/// labels come only from this list: any other path is `unknown`, so a
/// scanner cannot mint new time series.
const KNOWN_RPCS: &[RpcName] = &[
    RpcName::new(
        "userService.UserService",
        "Register",
        "unary",
        "userService.UserService/Register",
    ),
    RpcName::new(
        "userService.UserService",
        "FindByEmail",
        "unary",
        "userService.UserService/FindByEmail",
    ),
    RpcName::new(
        "userService.UserService",
        "FindByID",
        "unary",
        "userService.UserService/FindByID",
    ),
    RpcName::new("userService.UserService", "Login", "unary", "userService.UserService/Login"),
    RpcName::new("userService.UserService", "GetMe", "unary", "userService.UserService/GetMe"),
    RpcName::new("userService.UserService", "Logout", "unary", "userService.UserService/Logout"),
    RpcName::new(
        "userService.UserService",
        "ListSessions",
        "unary",
        "userService.UserService/ListSessions",
    ),
    RpcName::new(
        "userService.UserService",
        "RevokeSession",
        "unary",
        "userService.UserService/RevokeSession",
    ),
    RpcName::new(
        "userService.UserService",
        "LogoutAll",
        "unary",
        "userService.UserService/LogoutAll",
    ),
    RpcName::new(
        "userService.UserService",
        "ChangePassword",
        "unary",
        "userService.UserService/ChangePassword",
    ),
    RpcName::new(
        "userService.AdminService",
        "RevokeUserSessions",
        "unary",
        "userService.AdminService/RevokeUserSessions",
    ),
    RpcName::new(
        "userService.AdminService",
        "DisableUser",
        "unary",
        "userService.AdminService/DisableUser",
    ),
    RpcName::new(
        "userService.AdminService",
        "EnableUser",
        "unary",
        "userService.AdminService/EnableUser",
    ),
    RpcName::new(
        "userService.AdminService",
        "ResetSecondFactor",
        "unary",
        "userService.AdminService/ResetSecondFactor",
    ),
    RpcName::new("grpc.health.v1.Health", "Check", "unary", "grpc.health.v1.Health/Check"),
    RpcName::new("grpc.health.v1.Health", "Watch", "server_stream", "grpc.health.v1.Health/Watch"),
    RpcName::new(
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ),
    RpcName::new(
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ),
];

const UNKNOWN_RPC: RpcName = RpcName::new("unknown", "unknown", "unary", "unknown/unknown");

/// `/package.Service/Method` of a known RPC, or `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RpcName {
    pub(super) service: &'static str,
    pub(super) method: &'static str,
    pub(super) kind: &'static str,
    /// `service/method`, the span name.
    pub(super) full_name: &'static str,
}

impl RpcName {
    const fn new(
        service: &'static str,
        method: &'static str,
        kind: &'static str,
        full_name: &'static str,
    ) -> Self {
        Self { service, method, kind, full_name }
    }

    pub(super) fn parse(path: &str) -> Self {
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
        KNOWN_RPCS
            .iter()
            .find(|rpc| rpc.service == service && rpc.method == method)
            .copied()
            .unwrap_or(UNKNOWN_RPC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rpc_paths() {
        let rpc = RpcName::parse("/userService.UserService/Login");
        assert_eq!(
            (rpc.service, rpc.method, rpc.kind),
            ("userService.UserService", "Login", "unary")
        );
        assert_eq!(RpcName::parse("/grpc.health.v1.Health/Watch").kind, "server_stream");
        assert_eq!(
            RpcName::parse("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").kind,
            "bidi_stream"
        );
        for rpc in KNOWN_RPCS {
            assert_eq!(rpc.full_name, format!("{}/{}", rpc.service, rpc.method));
        }
        for junk in ["/", "", "/x/y", "/userService.UserService/Nope", "/a/b/c"] {
            let rpc = RpcName::parse(junk);
            assert_eq!((rpc.service, rpc.method), ("unknown", "unknown"), "{junk}");
        }
    }
}
