//! Everything formpush says to or hears from WeChat: the HTTP client and its error
//! classes, the shared access_token cache, and the message-push crypto and parsing.

pub mod client;
pub mod crypto;
pub mod errcode;
pub mod push;
pub mod token;
