//! `#[instrument_worker]`: argument parsing, handler checks and code generation.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    bracketed, parenthesized, FnArg, Ident, ImplItem, ImplItemFn, Item, LitFloat, LitInt, LitStr,
    Token, Type,
};

const ARGUMENTS: &str =
    "sync, async, threads, handler, source, prefix, labels, buckets, error_label";

/// The worker kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sync,
    Threads(u32),
    Async,
}

impl Kind {
    fn keyword(self) -> &'static str {
        match self {
            Kind::Sync => "sync",
            Kind::Threads(_) => "threads",
            Kind::Async => "async",
        }
    }
}

/// Parsed arguments, each with the span it was written at.
#[derive(Default)]
struct Args {
    kind: Option<(Kind, Span)>,
    handler: Option<Ident>,
    source: Option<Ident>,
    prefix: Option<LitStr>,
    labels: Vec<(LitStr, LitStr)>,
    labels_span: Option<Span>,
    buckets: Option<(Vec<f64>, Span)>,
    error_label: Option<LitStr>,
}

fn duplicate(name: &Ident) -> syn::Error {
    syn::Error::new(name.span(), format!("duplicate argument `{name}`"))
}

impl Args {
    fn set_kind(&mut self, kind: Kind, span: Span) -> syn::Result<()> {
        if let Some((earlier, _)) = self.kind {
            let same = matches!(
                (earlier, kind),
                (Kind::Sync, Kind::Sync)
                    | (Kind::Threads(_), Kind::Threads(_))
                    | (Kind::Async, Kind::Async)
            );
            let msg = if same {
                format!("duplicate argument `{}`", kind.keyword())
            } else {
                format!(
                    "conflicting worker kinds: `{}` was given already; give one of `sync`, `threads = N` or `async`",
                    earlier.keyword()
                )
            };
            return Err(syn::Error::new(span, msg));
        }
        self.kind = Some((kind, span));
        Ok(())
    }

    fn parse_one(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        if input.peek(Token![async]) {
            let tok: Token![async] = input.parse()?;
            return self.set_kind(Kind::Async, tok.span);
        }
        let name: Ident = input.parse()?;
        match name.to_string().as_str() {
            "sync" => self.set_kind(Kind::Sync, name.span()),
            "threads" => {
                if !input.peek(Token![=]) {
                    return Err(syn::Error::new(
                        name.span(),
                        "`threads` needs a thread count: `threads = 4`",
                    ));
                }
                input.parse::<Token![=]>()?;
                let n: LitInt = input.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "`threads` takes a positive integer literal: `threads = 4`",
                    )
                })?;
                let value: u32 = n.base10_parse()?;
                if value == 0 {
                    return Err(syn::Error::new(n.span(), "`threads` must be at least 1"));
                }
                self.set_kind(Kind::Threads(value), name.span())
            }
            "handler" | "source" => {
                input.parse::<Token![=]>()?;
                let method: Ident = input.parse()?;
                let slot = if name == "handler" {
                    &mut self.handler
                } else {
                    &mut self.source
                };
                if slot.is_some() {
                    return Err(duplicate(&name));
                }
                *slot = Some(method);
                Ok(())
            }
            "prefix" | "error_label" => {
                input.parse::<Token![=]>()?;
                let lit: LitStr = input.parse()?;
                let slot = if name == "prefix" {
                    &mut self.prefix
                } else {
                    &mut self.error_label
                };
                if slot.is_some() {
                    return Err(duplicate(&name));
                }
                *slot = Some(lit);
                Ok(())
            }
            "labels" => {
                if self.labels_span.is_some() {
                    return Err(duplicate(&name));
                }
                self.labels_span = Some(name.span());
                let content;
                parenthesized!(content in input);
                let pairs = Punctuated::<LabelPair, Token![,]>::parse_terminated(&content)?;
                self.labels = pairs.into_iter().map(|p| (p.key, p.value)).collect();
                Ok(())
            }
            "buckets" => {
                if self.buckets.is_some() {
                    return Err(duplicate(&name));
                }
                input.parse::<Token![=]>()?;
                let content;
                let bracket = bracketed!(content in input);
                let lits = Punctuated::<Number, Token![,]>::parse_terminated(&content)?;
                let values: Vec<f64> = lits.iter().map(|n| n.0).collect();
                let increasing = values.windows(2).all(|w| w[0] < w[1]);
                if values.is_empty() || !increasing || values.iter().any(|v| !v.is_finite()) {
                    return Err(syn::Error::new(
                        bracket.span.join(),
                        "`buckets` must be a non-empty list of strictly increasing finite numbers",
                    ));
                }
                self.buckets = Some((values, name.span()));
                Ok(())
            }
            "gevent" | "eventlet" | "gthread" | "tornado" | "uvicorn" | "asyncio" => {
                Err(syn::Error::new(
                    name.span(),
                    format!(
                        "`{name}` is not a worker kind of #[instrument_worker]: use `sync` (one job \
                         at a time), `threads = N` (a thread pool, like gthread) or `async` (tokio)"
                    ),
                ))
            }
            "kind" | "worker_class" | "class" => Err(syn::Error::new(
                name.span(),
                format!(
                    "there is no `{name} = ...` argument: write the worker kind on its own, \
                     as `sync`, `threads = N` or `async` (e.g. `#[instrument_worker(threads = 4)]`)"
                ),
            )),
            _ => Err(syn::Error::new(
                name.span(),
                format!("unknown argument `{name}`; expected one of: {ARGUMENTS}"),
            )),
        }
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            args.parse_one(input)?;
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

struct LabelPair {
    key: LitStr,
    value: LitStr,
}

impl Parse for LabelPair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let value: LitStr = input.parse()?;
        Ok(LabelPair {
            key: LitStr::new(&key.to_string(), key.span()),
            value,
        })
    }
}

/// A bucket bound: a float or integer literal.
struct Number(f64);

impl Parse for Number {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitInt) {
            let lit: LitInt = input.parse()?;
            return Ok(Number(lit.base10_parse()?));
        }
        let lit: LitFloat = input.parse()?;
        Ok(Number(lit.base10_parse()?))
    }
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = Args::parse.parse2(attr)?;
    let item: Item = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[instrument_worker] goes on a struct or on the `impl` block that holds its handler",
        )
    })?;
    let kind = args.kind.map_or(Kind::Sync, |(k, _)| k);
    let handler = args
        .handler
        .clone()
        .unwrap_or_else(|| Ident::new("handle", Span::call_site()));
    // Where an unsupported handler return type is reported (impl form: the return type).
    let mut ret_span = None;
    let self_ty: Type = match &item {
        Item::Impl(imp) => {
            if let Some((_, path, _)) = &imp.trait_ {
                return Err(syn::Error::new(
                    path.span(),
                    "#[instrument_worker] goes on an inherent `impl` block, not a trait impl",
                ));
            }
            if !imp.generics.params.is_empty() {
                return Err(syn::Error::new(
                    imp.generics.span(),
                    "generic worker types are not supported: instrument a concrete type",
                ));
            }
            let methods: Vec<&ImplItemFn> = imp
                .items
                .iter()
                .filter_map(|i| match i {
                    ImplItem::Fn(f) => Some(f),
                    _ => None,
                })
                .collect();
            let user_named = args.handler.is_some();
            let find = |name: &Ident, role: &str| -> syn::Result<&ImplItemFn> {
                // A default name has no span of its own: point at the impl's type instead.
                let span = if role == "handler" && !user_named {
                    imp.self_ty.span()
                } else {
                    name.span()
                };
                methods
                    .iter()
                    .copied()
                    .find(|m| m.sig.ident == *name)
                    .ok_or_else(|| {
                        syn::Error::new(
                            span,
                            format!("no method `{name}` in this impl to use as the {role}"),
                        )
                    })
            };
            let h = find(&handler, "handler")?;
            check_signature(h, kind, 1, "handler")?;
            if let syn::ReturnType::Type(_, ty) = &h.sig.output {
                ret_span = Some(ty.span());
            }
            if let Some(source) = &args.source {
                check_signature(find(source, "source")?, kind, 0, "source")?;
            }
            (*imp.self_ty).clone()
        }
        Item::Struct(s) => {
            if !s.generics.params.is_empty() {
                return Err(syn::Error::new(
                    s.generics.span(),
                    "generic worker types are not supported: instrument a concrete type",
                ));
            }
            let ident = &s.ident;
            syn::parse_quote!(#ident)
        }
        other => return Err(syn::Error::new(
            other.span(),
            "#[instrument_worker] goes on a struct or on the `impl` block that holds its handler",
        )),
    };
    let run = generate_run(&args, kind, &handler, &self_ty, ret_span);
    Ok(quote! {
        #item
        #run
    })
}

/// Check a handler (`inputs` = 1) or source (`inputs` = 0) method's shape against the kind.
fn check_signature(m: &ImplItemFn, kind: Kind, inputs: usize, role: &str) -> syn::Result<()> {
    let sig = &m.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!("the {role} cannot be generic"),
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!("the {role} must take `&self` as its first argument"),
            ))
        }
    }
    if let Some(extra) = sig.inputs.iter().nth(inputs + 1) {
        let msg = if inputs == 1 {
            format!("the {role} takes `&self` and one job: remove this argument (put what a job needs into one job type)")
        } else {
            format!("the {role} takes only `&self`: remove this argument")
        };
        return Err(syn::Error::new(extra.span(), msg));
    }
    if sig.inputs.len() != inputs + 1 {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("the {role} must take the job after `&self`: `(&self, job: Job)`"),
        ));
    }
    match (kind, &sig.asyncness) {
        (Kind::Async, None) => Err(syn::Error::new(
            sig.fn_token.span,
            format!("the `async` worker kind needs an `async fn` {role}"),
        )),
        (Kind::Sync | Kind::Threads(_), Some(a)) => Err(syn::Error::new(
            a.span,
            format!(
                "an `async fn` {role} needs the `async` worker kind: `#[instrument_worker(async)]`"
            ),
        )),
        _ => Ok(()),
    }
}

fn generate_run(
    args: &Args,
    kind: Kind,
    handler: &Ident,
    self_ty: &Type,
    ret_span: Option<Span>,
) -> TokenStream {
    let rt = quote!(::gpe_core::__private::runtime);
    let span = handler.span();
    // The handler call, converted to the runtime's outcome where it returns: an unsupported
    // return type is reported at the handler's return type (impl form) or at the handler name.
    let ret = ret_span.unwrap_or(span);
    let call = quote_spanned!(ret=> __gpe_worker.#handler(__gpe_job));
    let outcome = |call: TokenStream| {
        let of = quote_spanned!(ret=> Outcome::of);
        quote_spanned!(ret=> #rt::#of(#call))
    };
    let sync_call = outcome(call.clone());
    let async_call = outcome(quote_spanned!(ret=> #call.await));
    let kind_expr = match kind {
        Kind::Sync => quote!(#rt::Kind::Sync),
        Kind::Threads(n) => quote!(#rt::Kind::Threads(#n)),
        Kind::Async => quote!(#rt::Kind::Async),
    };
    let mut options = quote! {
        #rt::Options::new(::core::any::type_name::<#self_ty>()).kind(#kind_expr)
    };
    if let Some(prefix) = &args.prefix {
        options = quote!(#options.prefix(#prefix));
    }
    for (k, v) in &args.labels {
        options = quote!(#options.const_label(#k, #v));
    }
    if let Some((buckets, _)) = &args.buckets {
        options = quote!(#options.buckets(::std::vec![#(#buckets),*]));
    }
    if let Some(label) = &args.error_label {
        options = quote!(#options.error_label(#label));
    }
    let body = match (kind, &args.source) {
        (Kind::Async, Some(source)) => quote_spanned! {span=>
            #rt::run_async(self, __gpe_options,
                |__gpe_worker: ::std::sync::Arc<Self>| async move { __gpe_worker.#source().await },
                |__gpe_worker: ::std::sync::Arc<Self>, __gpe_job| async move {
                    #async_call
                })
        },
        (Kind::Async, None) => quote_spanned! {span=>
            #rt::run_async_connections(self, __gpe_options,
                |__gpe_worker: ::std::sync::Arc<Self>, __gpe_job| async move {
                    #async_call
                })
        },
        (_, Some(source)) => quote_spanned! {span=>
            #rt::run_blocking(self, __gpe_options,
                |__gpe_worker: &Self| __gpe_worker.#source(),
                |__gpe_worker: &Self, __gpe_job| #sync_call)
        },
        (_, None) => quote_spanned! {span=>
            #rt::run_blocking_connections(self, __gpe_options,
                |__gpe_worker: &Self, __gpe_job| #sync_call)
        },
    };
    quote! {
        impl #self_ty {
            /// Run this worker until gpe-master stops it (or its job source ends): metrics,
            /// heartbeat, graceful shutdown and max-requests included. Generated by
            /// `#[instrument_worker]`.
            #[allow(dead_code)]
            pub fn run(self) -> ::std::process::ExitCode {
                let __gpe_options = #options;
                #body
            }
        }
    }
}
