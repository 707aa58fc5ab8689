set -eo pipefail
kpt fn source . \
  | kpt fn eval - --image ghcr.io/kptdev/krm-functions-catalog/set-namespace:v0.4.1 -- namespace=piped \
  | kpt fn sink ../piped
mv ../piped/app.yaml app.yaml
