# Builds the `ferry` binary and runs it with /etc/ferry/ferry.toml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin ferry

FROM debian:bookworm-slim
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
EXPOSE 6432 9930
ENTRYPOINT ["ferry"]
CMD ["run", "--config", "/etc/ferry/ferry.toml"]
