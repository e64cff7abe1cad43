//! `UserRepository`: the one API the `UserStore` actor (and the admin CLI)
//! calls, over PostgreSQL or the embedded SQLite database.

use super::{CreateUserError, PgUserRepository, sqlite::SqliteUserRepository};
use crate::{
    actors::PoolSample,
    domain::{Email, NewUser, PasswordHash, User, UserCredentials, UserId},
    error::DependencyError,
};

#[derive(Clone)]
pub enum UserRepository {
    Postgres(PgUserRepository),
    Sqlite(SqliteUserRepository),
}

/// Calls the same method on whichever backend runs.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Self::Postgres(repo) => repo.$method($($arg),*).await,
            Self::Sqlite(repo) => repo.$method($($arg),*).await,
        }
    };
}

impl UserRepository {
    pub fn pool_sample(&self) -> PoolSample {
        match self {
            Self::Postgres(repo) => PoolSample::of(repo.pool()),
            Self::Sqlite(repo) => PoolSample::of(repo.pool()),
        }
    }

    pub async fn create(&self, new: &NewUser) -> Result<User, CreateUserError> {
        dispatch!(self.create(new))
    }

    pub async fn find_by_id(&self, id: UserId) -> Result<Option<User>, DependencyError> {
        dispatch!(self.find_by_id(id))
    }

    pub async fn find_credentials_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<UserCredentials>, DependencyError> {
        dispatch!(self.find_credentials_by_email(email))
    }

    pub async fn replace_password_hash(
        &self,
        id: UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> Result<bool, DependencyError> {
        dispatch!(self.replace_password_hash(id, old, new))
    }

    pub async fn find_account_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<User>, DependencyError> {
        dispatch!(self.find_account_by_email(email))
    }

    pub async fn set_disabled(&self, id: UserId, disabled: bool) -> Result<(), DependencyError> {
        dispatch!(self.set_disabled(id, disabled))
    }

    pub async fn promote_to_admin(&self, email: &Email) -> Result<Option<User>, DependencyError> {
        dispatch!(self.promote_to_admin(email))
    }

    pub async fn ping(&self) -> Result<(), DependencyError> {
        dispatch!(self.ping())
    }
}
