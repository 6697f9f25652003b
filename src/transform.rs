//! Transforms: jq programs (jaq) compiled once and run on each record.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::Value;

use crate::record::Fault;

type JqFilter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq program, with the source it came from.
pub struct Transform {
    code: String,
    filter: JqFilter,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Transform").field(&self.code).finish()
    }
}

impl Transform {
    /// Compile one jq program with jq's standard library, or say why it does not compile.
    pub fn compile(code: &str) -> std::result::Result<Transform, String> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            format!("jq program {code:?} does not parse: {:?}", errs.into_iter().map(|(_, e)| e).collect::<Vec<_>>())
        })?;
        let filter = Compiler::default().with_funs(funs).compile(modules).map_err(|errs| {
            format!("jq program {code:?} does not compile: {:?}", errs.into_iter().map(|(_, e)| e).collect::<Vec<_>>())
        })?;
        Ok(Transform { code: code.to_string(), filter })
    }

    /// The program's source.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Run on one value: `Ok(None)` when the program yields nothing (the record is
    /// filtered); a fault with rule `transform` when it fails or yields more than one value.
    pub fn run(&self, value: Value) -> std::result::Result<Option<Value>, Fault> {
        use serde::Deserialize as _;
        let input = Val::deserialize(value).map_err(|e| Fault::new(None, "transform", e.to_string()))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input)).map(unwrap_valr);
        let first = match outputs.next() {
            None => return Ok(None),
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(Fault::new(None, "transform", format!("jq error: {e}"))),
        };
        if outputs.next().is_some() {
            return Err(Fault::new(
                None,
                "transform",
                "the transform yielded more than one value; expected one or none",
            ));
        }
        let text = first.to_string();
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Fault::new(None, "transform", format!("jq produced non-JSON output: {e}")))
    }
}
