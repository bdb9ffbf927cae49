#!/bin/sh
# Creates one RabbitMQ user per service with the least it needs, through the
# management API: configure and read its own queues (and the events exchange,
# and its own hash exchange when its queue is partitioned),
# write to the events exchange, the default exchange (retry and dead-letter
# queues) and its own queues. Passwords come from the environment:
# <SERVICE>_AMQP_PASSWORD, e.g. INVENTORY_AMQP_PASSWORD, RESTOCK_AGENT_AMQP_PASSWORD.
set -eu
API="${RABBITMQ_API:-http://rabbitmq:15672/api}"
ADMIN="${RABBITMQ_ADMIN:-guest:guest}"
EXCHANGE='agentbus\\.events'

for service in inventory orders payments notifications shipping purchasing memory restock-agent substitute-agent review api; do
  variable="$(echo "$service" | tr 'a-z-' 'A-Z_')_AMQP_PASSWORD"
  password="$(printenv "$variable" || true)"
  if [ -z "$password" ]; then
    echo "$variable is not set" >&2
    exit 1
  fi
  own="${service}(\\\\..*)?"
  # A partitioned service also owns its hash exchange, agentbus.events.<service>.
  spread="$EXCHANGE\\\\.$service"
  curl -fsS -u "$ADMIN" -X PUT -H 'content-type: application/json' \
    "$API/users/$service" -d "{\"password\": \"$password\", \"tags\": \"\"}"
  curl -fsS -u "$ADMIN" -X PUT -H 'content-type: application/json' \
    "$API/permissions/%2F/$service" \
    -d "{\"configure\": \"^($EXCHANGE|$spread|$own)\$\", \"write\": \"^($EXCHANGE|$spread|amq\\\\.default|$own)\$\", \"read\": \"^($EXCHANGE|$spread|$own)\$\"}"
  echo "user $service: configure and read its own queues, write to the events exchange"
done
