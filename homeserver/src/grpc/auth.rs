//! Bearer-token authentication of client requests.

use crate::service::Context;
use crate::service::accounts::{self, AuthenticatedDevice};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The token of an `authorization: Bearer <token>` header, if there is one.
pub(crate) fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Resolves the request's bearer token to its device, or UNAUTHENTICATED.
pub(crate) async fn authenticate(
    context: &Context,
    metadata: &MetadataMap,
) -> Result<AuthenticatedDevice, Status> {
    Ok(accounts::authenticate(context, bearer_token(metadata)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let check = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", value.parse().unwrap());
            bearer_token(&metadata).map(str::to_owned)
        };
        assert_eq!(check("Bearer abc"), Some("abc".to_owned()));
        assert_eq!(check("bearer abc"), Some("abc".to_owned()));
        assert_eq!(check("Basic abc"), None);
        assert_eq!(check("Bearer "), None);
        assert_eq!(check("abc"), None);
        assert_eq!(bearer_token(&MetadataMap::new()), None);
    }
}
