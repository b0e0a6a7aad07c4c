//! One line per Lua script: [`lua_scripts!`](crate::lua_scripts) declares a crate's scripts.

/// Declares `struct Scripts` with one `redis::Script` field per listed name, loaded from
/// `<dir><name>.lua` (a path relative to the file that invokes the macro) by `Scripts::load()`.
/// Scripts are called by SHA (`EVALSHA`); redis-rs loads one again on `NOSCRIPT`.
///
/// The invoking crate depends on `redis` (only Redis stores have scripts):
///
/// ```ignore
/// stellar_bus::lua_scripts!("../lua/": enqueue, claim, renew);
/// // …
/// let scripts = Scripts::load();
/// ```
#[macro_export]
macro_rules! lua_scripts {
    ($dir:literal: $($name:ident),* $(,)?) => {
        /// Every Lua script of the store, one per atomic step, loaded once.
        #[derive(Debug)]
        struct Scripts {
            $($name: ::redis::Script,)*
        }

        impl Scripts {
            fn load() -> Self {
                Self {
                    $($name: ::redis::Script::new(include_str!(concat!($dir, stringify!($name), ".lua"))),)*
                }
            }
        }
    };
}
