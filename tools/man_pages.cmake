# Man pages: scdoc sources (NAME.SECTION.scd) rendered into roff in the build tree and installed to
# share/man/manSECTION. scdoc is Debian's `scdoc` package (tools/deps installs it).
find_program(LLMORCH_SCDOC scdoc)
if(NOT LLMORCH_SCDOC)
  message(FATAL_ERROR "scdoc not found: the man pages are written in scdoc. Run tools/deps as root "
                      "(or apt-get install scdoc), then configure again.")
endif()
include(GNUInstallDirs)

# llmorch_man_pages(COMPONENT comp SOURCES a.8.scd b.5.scd ...): a target man-<comp> (built by `all`)
# renders each into ${CMAKE_BINARY_DIR}/man/a.8 (and a.8.gz, installed with that install COMPONENT).
function(llmorch_man_pages)
  cmake_parse_arguments(arg "" "COMPONENT" "SOURCES" ${ARGN})
  set(outputs)
  foreach(src IN LISTS arg_SOURCES)
    string(REGEX REPLACE "\\.scd$" "" page "${src}")
    string(REGEX MATCH "[0-9]$" section "${page}")
    set(out "${CMAKE_BINARY_DIR}/man/${page}")
    # The page for `man -l` and the tests, and its gzip -9n copy to install (Debian policy 12.1:
    # compressed, reproducibly; lintian's uncompressed-manual-page otherwise).
    add_custom_command(OUTPUT "${out}" "${out}.gz"
      COMMAND ${CMAKE_COMMAND} -E make_directory "${CMAKE_BINARY_DIR}/man"
      COMMAND sh -c "\"$0\" < \"$1\" > \"$2.tmp\" && mv \"$2.tmp\" \"$2\" && gzip -9n -c \"$2\" > \"$2.gz\""
              "${LLMORCH_SCDOC}" "${CMAKE_CURRENT_SOURCE_DIR}/${src}" "${out}"
      DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/${src}"
      COMMENT "scdoc ${src}" VERBATIM)
    list(APPEND outputs "${out}" "${out}.gz")
    install(FILES "${out}.gz" DESTINATION "${CMAKE_INSTALL_MANDIR}/man${section}" COMPONENT ${arg_COMPONENT})
  endforeach()
  add_custom_target(man-${arg_COMPONENT} ALL DEPENDS ${outputs})
endfunction()
