//! SPEC §2, the product catalogue: a public list and detail, and admin create.

use commerce::page::split_page;
use commerce::ErrorCode;
use edge::bodies::CreateProductBody;
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
        None => Err(Problem::new(
            ErrorCode::ProductNotFound,
            format!("no product with id {id}"),
        )),
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
