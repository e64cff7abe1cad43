//! `UserRepository`: the one API the `UserStore` actor calls, over
//! PostgreSQL or the embedded SQLite database. The operations that differ
//! only in what they keep of a row are written once here, over each
//! backend's `select_by_email`.

use super::{postgres::PgUserRepository, sqlite::SqliteUserRepository};
use crate::{
    actors::PoolSample,
    domain::{Email, NewUser, PasswordHash, User, UserCredentials, UserId},
    error::{CreateUserError, DependencyError},
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

    pub async fn create_user(&self, new: &NewUser) -> Result<User, CreateUserError> {
        dispatch!(self.create_user(new))
    }

    pub async fn find_user_by_id(&self, id: UserId) -> Result<Option<User>, DependencyError> {
        dispatch!(self.find_user_by_id(id))
    }

    pub async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>, DependencyError> {
        let found = dispatch!(self.select_by_email("find_user_by_email", email, true))?;
        Ok(found.map(|c| c.user))
    }

    pub async fn find_credentials(
        &self,
        email: &Email,
    ) -> Result<Option<UserCredentials>, DependencyError> {
        dispatch!(self.select_by_email("find_credentials", email, true))
    }

    pub async fn find_account_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<User>, DependencyError> {
        let found = dispatch!(self.select_by_email("find_account_by_email", email, false))?;
        Ok(found.map(|c| c.user))
    }

    pub async fn replace_password_hash(
        &self,
        id: UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> Result<bool, DependencyError> {
        dispatch!(self.replace_password_hash(id, old, new))
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
