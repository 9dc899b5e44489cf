-- Tasks taken by a worker thread (owner) of a consumer, until acknowledged.
create table if not exists task_hold (
    id integer not null primary key,
    queue text not null,
    owner text not null,
    consumer text not null,
    data blob not null,
    priority real not null default 0.0
);
create index if not exists task_hold_owner on task_hold (queue, owner);
create index if not exists task_hold_consumer on task_hold (queue, consumer);
-- Each consumer's lease: its tasks are recovered once expires (unix time) has passed.
create table if not exists consumer_lease (
    queue text not null,
    consumer text not null,
    expires real not null,
    primary key (queue, consumer)
);
-- Task locks with a lease, renewed by their holder.
create table if not exists lock_lease (
    queue text not null,
    key text not null,
    token blob not null,
    expires real,
    primary key (queue, key)
);
