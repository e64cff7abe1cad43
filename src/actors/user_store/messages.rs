//! What the `UserStore` actor answers: each message is one call of the
//! [`UserRepository`] method named after it.

use super::backend::UserRepository;
use crate::{
    actors::store::store_messages,
    domain::{Email, NewUser, PasswordHash, User, UserCredentials, UserId},
    error::{CreateUserError, DependencyError},
};

store_messages! { UserRepository;
    /// Inserts a new account; `EmailTaken` if the address is registered.
    CreateUser(new: NewUser) -> Result<User, CreateUserError> => create_user(&new);

    /// An active account by id.
    FindUserById(id: UserId) -> Result<Option<User>, DependencyError> => find_user_by_id(id);

    /// An active account by email, case-insensitively.
    FindUserByEmail(email: Email) -> Result<Option<User>, DependencyError>
        => find_user_by_email(&email);

    /// An active account and its password hash, for checking a password.
    FindCredentials(email: Email) -> Result<Option<UserCredentials>, DependencyError>
        => find_credentials(&email);

    /// Any account by email, disabled or not (admin actions).
    FindAccountByEmail(email: Email) -> Result<Option<User>, DependencyError>
        => find_account_by_email(&email);

    /// Compare-and-set of a password hash: replaced only if still `old`.
    ReplacePasswordHash { id: UserId, old: PasswordHash, new: PasswordHash }
        -> Result<bool, DependencyError> => replace_password_hash(id, &old, &new);

    /// Disables (or enables again) an account.
    SetDisabled { id: UserId, disabled: bool } -> Result<(), DependencyError>
        => set_disabled(id, disabled);

    /// Makes the account with this email an admin; `None` if there is none.
    PromoteToAdmin(email: Email) -> Result<Option<User>, DependencyError>
        => promote_to_admin(&email);
}
