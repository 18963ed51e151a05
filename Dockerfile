# Multi-stage build: a static binary on an empty base, running as non-root.
# The final image has no shell; the binary's own subcommands are its tools.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/answer-relay ./cmd/answer-relay \
 && mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/answer-relay /answer-relay
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV ANSWER_RELAY_DATA_DIR=/data \
    ANSWER_RELAY_SMTP_LISTEN=0.0.0.0:2525 \
    ANSWER_RELAY_API_LISTEN=0.0.0.0:8025
EXPOSE 2525 8025
VOLUME ["/data"]
ENTRYPOINT ["/answer-relay"]
CMD ["serve"]
