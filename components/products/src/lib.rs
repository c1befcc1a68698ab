//! SPEC §2, the product catalogue: a public list and detail, and admin
//! create and restock. A restock reopens the product's sold-out gate.

use commerce::page::split_page;
use commerce::product::{self, Restock};
use commerce::ErrorCode;
use edge::bodies::{CreateProductBody, RestockBody};
use edge::idempotency::{self, Claim};
use edge::input::{json_body, page};
use edge::pg::{column, Db, Query};
use edge::respond::{self, Page};
use edge::router::{get, post, serve, Params};
use edge::Request;
use edge::{auth, ApiResult, Problem};
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;
use spin_sdk::pg4::{ParameterValue, Row};

/// `stock` in answers is what can still be ordered: stock not held by pending orders.
const LIST_PRODUCTS: Query = Query::new(
    "SELECT id, name, price, stock - reserved AS available
     FROM products WHERE id > $1 ORDER BY id LIMIT $2",
);
const GET_PRODUCT: Query =
    Query::new("SELECT id, name, price, stock - reserved AS available FROM products WHERE id = $1");
/// A new product starts with nothing reserved and remembers its initial stock (stock invariant).
const INSERT_PRODUCT: Query = Query::new(
    "INSERT INTO products (name, price, stock, initial_stock) VALUES ($1, $2, $3, $3)
     RETURNING id, name, price, stock - reserved AS available",
);

/// Invariants 2 and 5: the units are added exactly once per key
/// (`one_restock_per_key`) and recorded with the product's stock in the same
/// statement, so initial stock + restocked units = stock + units sold holds;
/// the product row is locked so `available_after` is what the restock made.
/// A stock the counter cannot hold adds nothing (`fits` is false).
const RESTOCK: Query = Query::with(
    "product AS (
        SELECT id, name, price, stock, reserved, stock <= 9223372036854775807 - $2 AS fits
        FROM products WHERE id = $1 FOR UPDATE
    ), restock AS (
        INSERT INTO product_restocks (product_id, quantity, requested_by, idempotency_key,
                                      request_fingerprint, available_after)
        SELECT id, $2, $3, $4, $5, stock + $2 - reserved FROM product WHERE fits
        ON CONFLICT ON CONSTRAINT one_restock_per_key DO NOTHING
        RETURNING product_id, available_after
    ), restocked AS (
        UPDATE products p SET stock = p.stock + $2 FROM restock WHERE p.id = restock.product_id
    )",
    "SELECT product.id, product.name, product.price, product.fits,
            restock.available_after AS available, restock.product_id IS NOT NULL AS restocked
    FROM product LEFT JOIN restock ON true",
);

/// Invariant 5: the restock this key already made, answered again.
const EARLIER_RESTOCK: Query = Query::new(
    "SELECT p.id, p.name, p.price, r.available_after AS available, r.request_fingerprint
    FROM product_restocks r JOIN products p ON p.id = r.product_id
    WHERE r.product_id = $1 AND r.requested_by = $2 AND r.idempotency_key = $3",
);

/// The idempotency scope of a restock, with the product id after it.
const RESTOCK_ROUTE: &str = "admin.products.restock";

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(
        req,
        out,
        "products",
        &[
            get("/api/v1/products", list_products),
            get("/api/v1/products/{id}", get_product),
            post("/api/v1/admin/products", create_product),
            post("/api/v1/admin/products/{id}/restock", restock_product),
        ],
    )
    .await
}

#[derive(Serialize)]
struct Product {
    id: i64,
    name: String,
    price: i64,
    stock: i64,
}

impl Product {
    fn from_row(row: &Row<'_>) -> Result<Product, Problem> {
        Ok(Product {
            id: column(row, "id")?,
            name: column(row, "name")?,
            price: column(row, "price")?,
            stock: column(row, "available")?,
        })
    }
}

fn list_products(req: &Request, _: &Params) -> ApiResult {
    let (limit, cursor) = page(req)?;
    let after = cursor.map_or(0, |c| c.after_id);
    let db = Db::connect()?;
    let rows = db.query(
        &LIST_PRODUCTS,
        &[
            ParameterValue::Int64(after),
            ParameterValue::Int64(i64::from(limit.get()) + 1),
        ],
    )?;
    let products = rows
        .iter()
        .map(|row| Product::from_row(&row))
        .collect::<Result<Vec<_>, _>>()?;
    let (items, next_cursor) = split_page(products, limit, |p| p.id);
    Ok(respond::ok(&Page { items, next_cursor }))
}

fn get_product(_: &Request, params: &Params) -> ApiResult {
    let id = commerce::ids::parse_positive_id(params.get("id"), "id")?;
    let db = Db::connect()?;
    let rows = db.query(&GET_PRODUCT, &[ParameterValue::Int64(id)])?;
    match rows.first(Product::from_row)? {
        Some(product) => Ok(respond::ok(&product)),
        None => Err(not_found(id)),
    }
}

fn create_product(req: &Request, _: &Params) -> ApiResult {
    auth::authenticate_admin(req)?;
    let product = json_body::<CreateProductBody>(req)?.into_new_product()?;
    let db = Db::connect()?;
    let rows = db.query(
        &INSERT_PRODUCT,
        &[
            ParameterValue::Str(product.name),
            ParameterValue::Int64(product.price),
            ParameterValue::Int64(product.stock),
        ],
    )?;
    let created = rows
        .first(Product::from_row)?
        .ok_or_else(|| Problem::unavailable("the insert returned no row"))?;
    let mut response = respond::json(201, &created);
    response.set_header("location", format!("/api/v1/products/{}", created.id));
    Ok(response)
}

/// SPEC §2: an admin adds units to a product, once per key; the product is
/// orderable again at once (its sold-out gate reopens).
fn restock_product(req: &Request, params: &Params) -> ApiResult {
    let admin = auth::authenticate_admin(req)?;
    let product_id = commerce::ids::parse_positive_id(params.get("id"), "id")?;
    let key = idempotency::key_of(req)?;
    let restock = json_body::<RestockBody>(req)?.into_restock()?;
    let route = format!("{RESTOCK_ROUTE}:{product_id}");
    let fingerprint = idempotency::fingerprint(&route, &restock.quantity());
    let db = Db::connect()?;
    match idempotency::claim(&admin, &route, key, fingerprint)? {
        Claim::Answered(response) => Ok(response),
        Claim::Owned(owned) => {
            let outcome = add_units(&db, &owned, admin.user_id, product_id, restock);
            Ok(owned.finish(outcome))
        }
    }
}

/// Run the restock statement under the claimed key; a key that already
/// restocked this product is answered with that restock.
fn add_units(
    db: &Db,
    owned: &idempotency::Owned,
    admin_id: i64,
    product_id: i64,
    restock: Restock,
) -> ApiResult {
    let key = ParameterValue::Str(owned.key.as_str().to_owned());
    let rows = db.query(
        &RESTOCK,
        &[
            ParameterValue::Int64(product_id),
            ParameterValue::Int64(restock.quantity()),
            ParameterValue::Int64(admin_id),
            key.clone(),
            ParameterValue::Str(owned.fingerprint.clone()),
        ],
    )?;
    let outcome = rows.first(|row| {
        let restocked = column::<bool>(row, "restocked")?;
        Ok((
            column::<bool>(row, "fits")?,
            restocked.then(|| Product::from_row(row)).transpose()?,
        ))
    })?;
    match outcome {
        None => Err(not_found(product_id)),
        Some((false, _)) => Err(product::restock_overflows().into()),
        Some((true, Some(product))) => {
            sold_out_gate::reopen_logged(owned.redis(), &[product_id]);
            Ok(respond::ok(&product))
        }
        Some((true, None)) => {
            let params = [
                ParameterValue::Int64(product_id),
                ParameterValue::Int64(admin_id),
                key,
            ];
            let earlier = db.query(&EARLIER_RESTOCK, &params)?.first(|row| {
                Ok((
                    Product::from_row(row)?,
                    column::<String>(row, "request_fingerprint")?,
                ))
            })?;
            match earlier {
                Some((_, fingerprint)) if fingerprint != owned.fingerprint => Err(idempotency::reused()),
                Some((product, _)) => Ok(idempotency::replay(
                    200,
                    "application/json",
                    serde_json::to_vec(&product).expect("products serialise"),
                )),
                None => Err(Problem::unavailable(
                    "the earlier restock of this key is not readable yet",
                )),
            }
        }
    }
}

fn not_found(product_id: i64) -> Problem {
    Problem::new(
        ErrorCode::ProductNotFound,
        format!("no product with id {product_id}"),
    )
}
