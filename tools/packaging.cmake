# Debian packages with CPack (DEB generator), one per install component:
#   host  -> `llmorch`: llmorch, llmorchd, llmorchd.service, /etc/llmorch/llmorch.conf (conffile),
#            templates, docs, and every other install(... COMPONENT host) rule in the tree (man pages,
#            bash completion: whoever adds them only names the component).
#   agent -> `llmorch-agent`: the static in-guest agent, its unit and udev rule (guest side, no Depends).
# tools/package runs cpack on build/ (its install prefix stays as configured: CPack installs under /usr
# by CPACK_PACKAGING_INSTALL_PREFIX). Included last by the top-level CMakeLists.txt, so every target exists.
include(GNUInstallDirs)

set(LLMORCH_PACKAGING_DIR "${PROJECT_SOURCE_DIR}/tools/packaging")
set(LLMORCH_MAINTAINER "llmorch developers <dev@llmorch.dev>")
set(LLMORCH_DEB_RELEASE 1)  # Debian revision: a change to the packaging alone bumps it
set(LLMORCH_DEB_VERSION "${PROJECT_VERSION}-${LLMORCH_DEB_RELEASE}")

# Per package: copyright and changelog.Debian.gz (Debian policy 12.7, 12.5), generated reproducibly.
function(llmorch_package_docs package component)
  set(dir "${PROJECT_BINARY_DIR}/packaging/${package}")
  set(PACKAGE "${package}")
  set(VERSION "${LLMORCH_DEB_VERSION}")
  set(MAINTAINER "${LLMORCH_MAINTAINER}")
  configure_file("${LLMORCH_PACKAGING_DIR}/changelog.in" "${dir}/changelog.Debian" @ONLY)
  execute_process(COMMAND gzip -9nf "${dir}/changelog.Debian" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip could not compress ${dir}/changelog.Debian (exit ${rc}); is gzip installed?")
  endif()
  install(FILES "${LLMORCH_PACKAGING_DIR}/copyright" "${dir}/changelog.Debian.gz"
          DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/doc/${package}" COMPONENT ${component})
  # Maintainer scripts (CPack takes them by their file names).
  foreach(script postinst prerm postrm)
    if(EXISTS "${LLMORCH_PACKAGING_DIR}/${package}.${script}")
      configure_file("${LLMORCH_PACKAGING_DIR}/${package}.${script}" "${dir}/control/${script}" COPYONLY)
      list(APPEND control "${dir}/control/${script}")
    endif()
  endforeach()
  set(LLMORCH_CONTROL_${component} ${control} PARENT_SCOPE)
endfunction()

# --- host: `llmorch` ---
install(TARGETS llmorch RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT host)
# llmorchd's default --config path, whatever the prefix.
install(FILES "${PROJECT_SOURCE_DIR}/templates/llmorch.conf.example" DESTINATION /etc/llmorch RENAME llmorch.conf
        COMPONENT host)
file(GLOB LLMORCH_VM_TEMPLATES CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/templates/*.conf")
install(FILES ${LLMORCH_VM_TEMPLATES} DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/llmorch/templates" COMPONENT host)
install(FILES "${PROJECT_SOURCE_DIR}/README.md" DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/doc/llmorch" COMPONENT host)
install(FILES "${PROJECT_SOURCE_DIR}/templates/README.md" DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/doc/llmorch"
        RENAME templates.md COMPONENT host)
llmorch_package_docs(llmorch host)
file(WRITE "${PROJECT_BINARY_DIR}/packaging/llmorch/control/conffiles" "/etc/llmorch/llmorch.conf\n")
list(APPEND LLMORCH_CONTROL_host "${PROJECT_BINARY_DIR}/packaging/llmorch/control/conffiles")

# --- agent: `llmorch-agent` ---
install(TARGETS llmorch-agent RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR} COMPONENT agent)
# Debian 12 keeps units and udev rules under /lib (usrmerge not yet finished in policy; lintian checks).
install(CODE "
  file(READ \"${PROJECT_SOURCE_DIR}/agent/systemd/llmorch-agent.service\" unit)
  string(REPLACE \"ExecStart=/usr/sbin/llmorch-agent\" \"ExecStart=\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SBINDIR}/llmorch-agent\" unit \"\${unit}\")
  file(WRITE \"${PROJECT_BINARY_DIR}/packaging/llmorch-agent/llmorch-agent.service\" \"\${unit}\")"
  COMPONENT agent)
install(FILES "${PROJECT_BINARY_DIR}/packaging/llmorch-agent/llmorch-agent.service"
        DESTINATION "${LLMORCH_SYSTEMD_UNIT_DIR}" COMPONENT agent)
install(FILES "${PROJECT_SOURCE_DIR}/agent/systemd/60-llmorch-agent.rules" DESTINATION /lib/udev/rules.d
        COMPONENT agent)
# A static binary is the point of this package (it runs in any guest): tell lintian so.
install(FILES "${LLMORCH_PACKAGING_DIR}/llmorch-agent.lintian-overrides"
        DESTINATION "${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides" RENAME llmorch-agent COMPONENT agent)
llmorch_package_docs(llmorch-agent agent)

# --- CPack ---
# Descriptions: first line the synopsis; CPack indents the rest and turns an empty line into " .".
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME llmorch)
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_CONTACT "${LLMORCH_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL host agent)  # not "Unspecified": a rule without a component is in no package
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${LLMORCH_DEB_RELEASE})
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://llmorch.dev")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_HOST_PACKAGE_NAME llmorch)
set(CPACK_DEBIAN_HOST_PACKAGE_SHLIBDEPS ON)  # Depends: from dpkg-shlibdeps on the installed binaries
set(CPACK_DEBIAN_HOST_PACKAGE_RECOMMENDS "libvirt-daemon-system, qemu-system-x86")
set(CPACK_DEBIAN_HOST_PACKAGE_CONTROL_EXTRA "${LLMORCH_CONTROL_host}")
set(CPACK_COMPONENT_HOST_DESCRIPTION
    "orchestrator for LLM virtual machines on KVM hosts
llmorch places LLM guest VMs on the host's NUMA nodes through libvirt, controls
their memory with the virtio balloon, and keeps dividing the host's CPUs among
the running VMs by priority and load reported by an agent in every guest.

This package holds the llmorch command, the llmorchd daemon and its systemd
unit, the host configuration and the VM templates.")

set(CPACK_DEBIAN_AGENT_PACKAGE_NAME llmorch-agent)
set(CPACK_DEBIAN_AGENT_PACKAGE_SHLIBDEPS OFF)  # static
set(CPACK_DEBIAN_AGENT_PACKAGE_CONTROL_EXTRA "${LLMORCH_CONTROL_agent}")
set(CPACK_COMPONENT_AGENT_DESCRIPTION
    "llmorch guest agent (static)
The in-guest agent of llmorch: it reports the guest's priority, load and
memory to llmorchd on the host over the org.llmorch.agent.0 virtio-serial
port. udev starts it when that port appears.")

include(CPack)
