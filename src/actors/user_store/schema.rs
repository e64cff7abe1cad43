//! Diesel schema of the `users` table (see `migrations/`).

/// The Postgres enum `role` ('admin', 'user'), as the Go service defined it.
#[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId, Clone)]
#[diesel(postgres_type(name = "role"))]
pub struct RoleType;

diesel::table! {
    use diesel::sql_types::*;
    use super::RoleType;

    users (user_id) {
        user_id -> Uuid,
        #[max_length = 32]
        first_name -> Varchar,
        #[max_length = 32]
        last_name -> Varchar,
        #[max_length = 64]
        email -> Varchar,
        #[max_length = 250]
        password -> Varchar,
        role -> RoleType,
        #[max_length = 250]
        avatar -> Nullable<Varchar>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// Disabled accounts (`auth-service admin disable`).
    user_blocks (user_id) {
        user_id -> Uuid,
        disabled_at -> Timestamptz,
    }
}

diesel::joinable!(user_blocks -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, user_blocks);
