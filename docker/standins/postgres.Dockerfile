# Stand-in for postgres:15: Debian bookworm's PostgreSQL 15, with an entrypoint that
# honours the official image's variables (POSTGRES_USER, POSTGRES_DB,
# POSTGRES_PASSWORD_FILE, PGDATA) and runs the server as the postgres user.
FROM tuner-standin/debian:bookworm
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
RUN mkdir -p "$PGDATA" /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 700 "$PGDATA" && chmod 2775 /var/run/postgresql
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
# Fast shutdown, as in the official image.
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
