//! Shared helpers for the scripted-upstream integration tests (`mysql8_scripted`, `bad_input`).
#![allow(dead_code)]

pub mod fake;
