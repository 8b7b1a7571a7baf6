# wsload: WebSocket SIP load generator (scripts/bench_ws.sh). Included from
# tools/CMakeLists.txt with include(wsload.cmake).
add_executable(wsload ${CMAKE_CURRENT_LIST_DIR}/wsload.c)
target_link_libraries(wsload PRIVATE PkgConfig::LWS PkgConfig::UV OpenSSL::SSL OpenSSL::Crypto)
