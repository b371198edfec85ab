%% Erlang/OTP peer of `gristmill bench`: a gen_server echo on one node, and a client on
%% another node that measures distributed gen_server:call latency and rate.
%%
%% The client prints one JSON line per measurement: one call in flight, then N in flight
%% (N client processes, each with one call outstanding, over the one distribution connection).
-module(gm_bench).
-behaviour(gen_server).

-export([serve/0, client/1]).
-export([init/1, handle_call/3, handle_cast/2]).

serve() ->
    {ok, _} = gen_server:start({local, gm_echo}, ?MODULE, [], []),
    io:format("ready~n").

init([]) ->
    {ok, nostate}.

handle_call(Message, _From, State) ->
    {reply, Message, State}.

handle_cast(_Message, State) ->
    {noreply, State}.

%% Arguments as strings, from `-run`: server node, recorded milliseconds, calls in flight.
client([ServerNode, DurationMs, InFlight]) ->
    Server = list_to_atom(ServerNode),
    pong = net_adm:ping(Server),
    Duration = list_to_integer(DurationMs),
    Warmup = min(Duration div 10, 1000),
    Payload = binary:copy(<<7>>, 16),
    report(1, measure(Server, Payload, 1, Warmup, Duration)),
    N = list_to_integer(InFlight),
    report(N, measure(Server, Payload, N, Warmup, Duration)),
    init:stop().

measure(Server, Payload, N, Warmup, Duration) ->
    Parent = self(),
    Start = erlang:monotonic_time(nanosecond),
    From = Start + Warmup * 1000000,
    Until = From + Duration * 1000000,
    Workers = [spawn_link(fun() -> Parent ! {samples, self(), loop(Server, Payload, From, Until, [])} end)
               || _ <- lists:seq(1, N)],
    Samples = lists:append([receive {samples, Worker, S} -> S end || Worker <- Workers]),
    {Duration, Samples}.

loop(Server, Payload, From, Until, Samples) ->
    Started = erlang:monotonic_time(nanosecond),
    if
        Started >= Until ->
            Samples;
        true ->
            Payload = gen_server:call({gm_echo, Server}, Payload),
            case Started >= From of
                true ->
                    Micros = (erlang:monotonic_time(nanosecond) - Started) / 1000,
                    loop(Server, Payload, From, Until, [Micros | Samples]);
                false ->
                    loop(Server, Payload, From, Until, Samples)
            end
    end.

percentile(Sorted, Count, Quantile) ->
    Rank = max(1, min(Count, ceil(Quantile * Count))),
    lists:nth(Rank, Sorted).

report(InFlight, {DurationMs, Samples}) ->
    Sorted = lists:sort(Samples),
    Count = length(Sorted),
    io:format("{\"in_flight\":~b,\"ops\":~b,\"elapsed_secs\":~f,\"p50_us\":~f,\"p99_us\":~f,\"p999_us\":~f}~n",
              [InFlight, Count, DurationMs / 1000,
               float(percentile(Sorted, Count, 0.5)),
               float(percentile(Sorted, Count, 0.99)),
               float(percentile(Sorted, Count, 0.999))]).
