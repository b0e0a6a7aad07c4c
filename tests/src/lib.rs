//! Cross-crate scenarios for Stellar. The scenarios are the integration tests in `tests/tests/`;
//! this library is empty.
